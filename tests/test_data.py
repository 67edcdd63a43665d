"""Image IO and crops: exact 8-bit round trips, atomic writes, errors on bad files, the
iRestNet centre-crop offsets, random crops under jit, and folder order."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxrestore.data import ImageFolder, center_crop, list_images, load_image, random_crop, sample_image, save_image


def _u8(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_png_round_trip_is_exact(tmp_path, rng):
    img = _u8(rng, (17, 23, 3))
    path = save_image(tmp_path / "sub" / "x.png", img / 255.0)  # creates the folder too
    assert path == tmp_path / "sub" / "x.png"
    loaded = load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == (17, 23, 3)
    np.testing.assert_array_equal(loaded, (img / 255.0).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    # float64 on request; values are rounded to the nearest 8-bit level and clipped on save
    x = np.clip(img / 255.0 + rng.uniform(-0.4, 0.4, img.shape) / 255.0, -0.5, 1.5)
    x[0, 0] = [-0.3, 1.7, 0.5]
    save_image(tmp_path / "y.png", x)
    back = load_image(tmp_path / "y.png", dtype=np.float64)
    np.testing.assert_array_equal(back * 255, np.round(np.clip(x, 0, 1) * 255))


def test_save_image_grayscale_and_single_channel(tmp_path, rng):
    img = _u8(rng, (9, 11))
    save_image(tmp_path / "g.png", img / 255.0)
    save_image(tmp_path / "g1.png", (img / 255.0)[..., None])
    for name in ("g.png", "g1.png"):
        with Image.open(tmp_path / name) as im:
            assert im.mode == "L"
        loaded = load_image(tmp_path / name)
        np.testing.assert_array_equal(loaded, np.repeat((img / 255.0).astype(np.float32)[..., None], 3, -1))


def test_load_image_modes(tmp_path, rng):
    gray = _u8(rng, (9, 11))
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    x = load_image(tmp_path / "l.png")
    assert x.shape == (9, 11, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_array_equal(x[..., 0], (gray / 255.0).astype(np.float32))
    rgba = _u8(rng, (9, 11, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), (rgba[..., :3] / 255.0).astype(np.float32))
    g16 = rng.integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    x16 = load_image(tmp_path / "g16.png", dtype=np.float64)
    np.testing.assert_allclose(x16[..., 1], g16 / 65535.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode,ext", [("P", ".png"), ("CMYK", ".jpg")])
def test_load_image_converts_other_modes_to_rgb(tmp_path, rng, mode, ext):
    """A palette PNG or a CMYK JPEG must load as its RGB colours (what PIL's convert('RGB')
    gives), not as palette indices or as C, M, Y read for R, G, B. (Fails while load_image reads
    np.asarray(im) for every mode.)"""
    rgb = Image.fromarray(_u8(rng, (8, 9, 3)))
    im = rgb.quantize(16) if mode == "P" else rgb.convert(mode)
    path = tmp_path / f"x{ext}"
    im.save(path)
    with Image.open(path) as stored:
        assert stored.mode == mode
        expected = np.asarray(stored.convert("RGB")) / 255.0
    np.testing.assert_allclose(load_image(path, dtype=np.float64), expected, rtol=0, atol=1e-12)


def _failing_save(self, fp, *args, **kwargs):
    fp.write(b"\x89PNG partial data")  # something reaches the temporary file first
    raise OSError("disk full (simulated)")


def test_save_image_is_atomic(tmp_path, rng, monkeypatch):
    new = tmp_path / "new.png"
    old = tmp_path / "old.png"
    img = _u8(rng, (8, 8, 3))
    save_image(old, img / 255.0)
    before = old.read_bytes()
    monkeypatch.setattr(Image.Image, "save", _failing_save)
    with pytest.raises(OSError, match="simulated"):
        save_image(new, img / 255.0)
    with pytest.raises(OSError, match="simulated"):
        save_image(old, 1 - img / 255.0)
    assert not new.exists()
    assert old.read_bytes() == before  # the old content survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]  # no temporary files left


def test_save_image_permissions_like_a_plain_file(tmp_path, rng):
    """mkstemp creates 0600 files; the image must get the usual umask-based mode."""
    save_image(tmp_path / "x.png", _u8(rng, (4, 4, 3)) / 255.0)
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_save_image_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "x.png", np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="extension"):
        save_image(tmp_path / "x.xyz", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        save_image(tmp_path / "x.png", np.zeros((4, 4, 2)))
    assert not any(tmp_path.iterdir())


def test_load_image_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(bad)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ValueError):
        load_image(text)
    with pytest.raises(ValueError):
        load_image(tmp_path)  # a folder


# ----------------------------------------------------------------------------------- crops


def _coords(h, w):
    """An image whose pixel (i, j) holds (i, j, 0): a crop tells its own offset."""
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([ii, jj, np.zeros_like(ii)], -1).astype(np.float32)


@pytest.mark.parametrize("h,w,expected", [
    (481, 321, (112, 32)),  # 112.5 -> 112 and 32.5 -> 32: halves go to even
    (483, 323, (114, 34)),  # 113.5 -> 114 and 33.5 -> 34
    (482, 322, (113, 33)),
    (256, 256, (0, 0)),
    (257, 300, (0, 22)),  # 0.5 -> 0
])
def test_center_crop_offsets(h, w, expected):
    crop = center_crop(_coords(h, w), 256)
    assert crop.shape == (256, 256, 3)
    assert (int(crop[0, 0, 0]), int(crop[0, 0, 1])) == expected
    assert expected == (round((h - 256) / 2), round((w - 256) / 2))


def test_center_crop_rectangular_and_too_large():
    crop = center_crop(_coords(20, 30), (10, 7))
    assert crop.shape == (10, 7, 3) and (crop[0, 0, 0], crop[0, 0, 1]) == (5, 12)  # 11.5 -> 12
    with pytest.raises(ValueError):
        center_crop(_coords(20, 30), 21)


def test_random_crop_jittable_and_in_bounds():
    x = jnp.asarray(_coords(13, 17))
    crop = jax.jit(random_crop, static_argnums=2)
    keys = jax.random.split(jax.random.key(0), 200)
    crops = jax.vmap(lambda k: random_crop(k, x, (5, 6)))(keys)
    i0, j0 = np.asarray(crops[:, 0, 0, 0]).astype(int), np.asarray(crops[:, 0, 0, 1]).astype(int)
    assert i0.min() == 0 and i0.max() == 13 - 5
    assert j0.min() == 0 and j0.max() == 17 - 6
    for k, a, b, c in zip(keys[:5], i0, j0, crops):
        np.testing.assert_array_equal(c, x[a : a + 5, b : b + 6])
        np.testing.assert_array_equal(crop(k, x, (5, 6)), c)  # jit == vmap == deterministic per key
    with pytest.raises(ValueError):
        random_crop(keys[0], x, 14)


# ---------------------------------------------------------------------------------- folders


def test_image_folder_sorted_order(tmp_path, rng):
    names = ["b.png", "a.png", "C.png", "10.png", "2.png", "d.jpg"]
    for i, n in enumerate(names):
        save_image(tmp_path / n, np.full((6, 8, 3), i / 10))
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder with an image-like name
    expected = sorted(names)
    assert expected == ["10.png", "2.png", "C.png", "a.png", "b.png", "d.jpg"]
    assert [p.name for p in list_images(tmp_path)] == expected
    ds = ImageFolder(tmp_path)
    assert ds.names == expected and len(ds) == 6
    for k, n in enumerate(expected):
        assert ds[k][0, 0, 0] == pytest.approx(names.index(n) / 10, abs=0.03)  # jpg is lossy
    cropped = ImageFolder(tmp_path, crop=4, limit=3)
    assert cropped.names == expected[:3]
    assert cropped.stack().shape == (3, 4, 4, 3)
    with pytest.raises(ValueError):
        ds.stack()  # no crop: shapes could differ


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError):
        ImageFolder(tmp_path)  # empty
    with pytest.raises(ValueError):
        ImageFolder(tmp_path / "missing")


def test_sample_image():
    x = sample_image()
    assert x.shape == (256, 256, 3)
    assert x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.1 and np.abs(np.diff(x, axis=0)).mean() > 0.01  # a real picture
    small = sample_image(64)
    np.testing.assert_array_equal(small, center_crop(x, 64))
    assert sample_image(None).shape == (512, 512, 3)
    with pytest.raises(ValueError):
        sample_image(300)


def test_float_tiffs_keep_their_values_or_say_their_range(tmp_path):
    import numpy as np
    import pytest
    from PIL import Image

    from jaxrestore.data import load_image

    a = np.random.default_rng(0).random((16, 12)).astype(np.float32)
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    x = load_image(tmp_path / "f.tif")
    assert x.shape == (16, 12, 3)
    np.testing.assert_array_equal(x[..., 1], a)  # not 0, not clipped to 0/1
    Image.fromarray(a * 1000, mode="F").save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"values in \[[0-9.]+, 99[0-9.]+\]; float images must lie in \[0, 1\]"):
        load_image(tmp_path / "big.tif")


def test_sixteen_bit_images_keep_their_range(tmp_path):
    import struct
    import zlib

    import numpy as np
    import pytest

    from jaxrestore.data import load_image

    rng = np.random.default_rng(1)
    b = (rng.random((6, 5, 3)) * 65535).astype(np.uint16)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in b)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    (tmp_path / "c16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0))
                                       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with pytest.warns(UserWarning, match="8-bit precision"):
        x = load_image(tmp_path / "c16.png")
    assert np.max(np.abs(x - b / 65535.0)) <= 1 / 255  # the right range, 8-bit precision


def test_a_killed_write_leaves_no_lasting_temporary_file(tmp_path):
    import os
    import time

    from jaxrestore.data.atomic import STALE_SECONDS, atomic_open

    target = tmp_path / "out.png"
    stale = tmp_path / ".out.png.abc123.tmp"  # what a SIGKILL during a write leaves
    fresh = tmp_path / ".out.png.def456.tmp"  # a write in progress elsewhere: left alone
    other = tmp_path / ".other.png.xyz.tmp"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - STALE_SECONDS - 10
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    with atomic_open(target, "wb") as f:
        f.write(b"done")
    assert target.read_bytes() == b"done"
    assert not stale.exists() and fresh.exists() and other.exists()
