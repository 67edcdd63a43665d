"""Image IO, crops and image-folder datasets (host-side glue; the math never imports it)."""

from jaxrestore.data.atomic import atomic_open
from jaxrestore.data.images import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    center_crop,
    list_images,
    load_image,
    random_crop,
    sample_image,
    save_image,
)

__all__ = ["atomic_open", "IMAGE_EXTENSIONS", "ImageFolder", "center_crop", "list_images", "load_image", "random_crop", "sample_image", "save_image"]
