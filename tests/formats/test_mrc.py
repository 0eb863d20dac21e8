"""MRC images, stacks and volumes."""

from __future__ import annotations

import io

import mrcfile
import numpy as np
import pytest

from cryoweave.errors import InputError
from cryoweave.formats import StackWriter, read_images, read_info, read_volume, write_mrc


def test_stack_writer_writes_atomically_with_voxel_size_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 12, 12)).astype(np.float32)
    path = tmp_path / "s.mrcs"
    with StackWriter(path, 7, 12, 1.75) as writer:
        writer.write(0, data[:4])
        assert not path.exists()  # only the temporary name exists while writing
        writer.write(4, data[4:])
    np.testing.assert_array_equal(read_images(path), data)
    np.testing.assert_array_equal(read_images(path, [6, 0]), data[[6, 0]])
    with mrcfile.open(path) as mrc:
        assert mrc.voxel_size.x == pytest.approx(1.75)
        assert mrc.header.dmean == pytest.approx(data.mean(), abs=1e-5)
        assert mrc.header.rms == pytest.approx(data.std(), rel=1e-4)
    assert list(tmp_path.iterdir()) == [path]


def test_stack_writer_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), StackWriter(tmp_path / "s.mrcs", 3, 8, 1.0) as w:
        w.write(0, np.zeros((1, 8, 8)))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_stack_is_not_renamed(tmp_path):
    with pytest.raises(RuntimeError, match="1 of 3"), \
            StackWriter(tmp_path / "s.mrcs", 3, 8, 1.0) as w:
        w.write(0, np.zeros((1, 8, 8)))
    assert list(tmp_path.iterdir()) == []


def test_large_offsets_use_int64(tmp_path):
    """A stack whose data passes 4 GiB: sparse file, memory-mapped, last image readable."""
    n, box = 16385, 256  # 16385 × 256² × 4 B > 4 GiB
    path = tmp_path / "big.mrcs"
    last = np.full((1, box, box), 3.0, np.float32)
    with StackWriter(path, n, box, 1.0) as writer:
        writer._written = n - 1  # skip writing the (zero) body: the file is sparse
        writer.write(n - 1, last)
    assert path.stat().st_size > 4 * 1024**3
    np.testing.assert_array_equal(read_images(path, [n - 1]), last)


def test_volume_and_image_round_trip(tmp_path):
    volume = np.arange(5 * 5 * 5, dtype=np.float32).reshape(5, 5, 5)
    write_mrc(tmp_path / "v.mrc", volume, 2.5)
    back, pixel = read_volume(tmp_path / "v.mrc")
    np.testing.assert_array_equal(back, volume)
    assert pixel == pytest.approx(2.5)
    assert read_info(tmp_path / "v.mrc").is_volume


def test_truncated_and_missing_files_name_the_file_and_sizes(tmp_path):
    path = tmp_path / "s.mrcs"
    write_mrc(path, np.zeros((3, 16, 16)), 1.0, volume=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"s\.mrcs: truncated.*4096 bytes.*3996 bytes"):
        read_info(path)
    with pytest.raises(InputError, match="not found"):
        read_info(tmp_path / "none.mrc")
    (tmp_path / "junk.mrc").write_bytes(b"x" * 2000)
    with pytest.raises(InputError, match=r"junk\.mrc"):
        read_info(tmp_path / "junk.mrc")


@pytest.mark.real_data
def test_real_maps_load(real_data_dir):
    volume, pixel = read_volume(real_data_dir / "mrcfile" / "EMD-3197.map")
    assert volume.shape == (20, 20, 20) and pixel == pytest.approx(11.4)
    # EMD-3001 stores its axes as (MAPC, MAPR, MAPS) = (3, 1, 2): returned as (z, y, x)
    volume, _ = read_volume(real_data_dir / "mrcfile" / "EMD-3001.map")
    assert volume.shape == (73, 25, 43)
    with mrcfile.open(real_data_dir / "mrcfile" / "EMD-3001.map", permissive=True) as mrc:
        raw = np.asarray(mrc.data)  # (sections=y, rows=x, columns=z)
    np.testing.assert_array_equal(volume, np.transpose(raw, (2, 0, 1)))
    ribosome, pixel = read_volume(real_data_dir / "aspire" / "clean70SRibosome_vol_65p.mrc")
    assert ribosome.shape == (65, 65, 65) and pixel == 0.0  # header has no pixel size


@pytest.mark.parametrize("mode", [0, 1, 12])
def test_a_wrong_mode_is_refused_by_the_size_the_header_implies(tmp_path, mode):
    path = tmp_path / "s.mrcs"
    write_mrc(path, np.ones((3, 16, 16)), 1.0, volume=False)
    with mrcfile.mmap(path, "r+") as mrc:
        mrc.header.mode = mode  # the data stays float32: 4 bytes a value
    with pytest.raises(InputError, match=rf"s\.mrcs: .* mode {mode} .*does not match the data"):
        read_info(path)


@pytest.mark.parametrize("mode", [3, 4, 101])
def test_unsupported_modes_are_named_with_the_supported_ones(tmp_path, mode):
    path = tmp_path / "s.mrcs"
    write_mrc(path, np.ones((3, 16, 16)), 1.0, volume=False)
    with mrcfile.mmap(path, "r+", permissive=True) as mrc:
        mrc.header.mode = mode
    with pytest.raises(InputError, match=rf"unsupported MRC mode {mode}; supported modes are "
                                         r"0 \(int8\), 1 \(int16\), 2 \(float32\)"):
        read_info(path)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16])
def test_valid_integer_and_half_precision_stacks_read_as_float32(tmp_path, dtype):
    data = (np.arange(2 * 8 * 8) % 100).reshape(2, 8, 8).astype(dtype)
    with mrcfile.new(tmp_path / "s.mrcs") as mrc:
        mrc.set_data(data)
        mrc.header.nsymbt = 0
    images = read_images(tmp_path / "s.mrcs")
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, data.astype(np.float32))


def test_a_standard_extended_header_is_allowed_and_extra_bytes_are_not(tmp_path):
    path = tmp_path / "x.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 8, 8), np.float32))
        mrc.set_extended_header(np.zeros(160, dtype="V1"))
    np.testing.assert_array_equal(read_images(path), np.ones((2, 8, 8), np.float32))
    path.write_bytes(path.read_bytes() + b"\0" * 4)
    with pytest.raises(InputError, match=r"x\.mrcs: .*file has 1700 bytes"):
        read_info(path)


def test_header_implied_size_tells_how_long_a_file_must_be(tmp_path):
    from cryoweave.formats.mrc import header_implied_size

    path = write_mrc(tmp_path / "m.mrc", np.zeros((6, 10), np.float32), 1.0)
    data = path.read_bytes()
    assert header_implied_size(path) == len(data) == 1024 + 6 * 10 * 4
    (tmp_path / "part.mrc").write_bytes(data[:1030])  # a file still being written
    assert header_implied_size(tmp_path / "part.mrc") == len(data)
    (tmp_path / "short.mrc").write_bytes(data[:500])  # not even a whole header
    assert header_implied_size(tmp_path / "short.mrc") is None
    (tmp_path / "text.mrc").write_bytes(b"not an MRC file " * 100)
    assert header_implied_size(tmp_path / "text.mrc") is None


def test_stack_writer_header_is_mrcfiles_and_threads_may_write_at_once(tmp_path):
    """Positional writes from 4 threads in any order give the stack, and the header is the
    one mrcfile writes for the same data (the label's timestamp aside)."""
    from concurrent.futures import ThreadPoolExecutor

    data = np.random.default_rng(3).normal(size=(40, 10, 10)).astype(np.float32)
    path = tmp_path / "s.mrcs"
    with StackWriter(path, 40, 10, 1.25) as writer, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda start: writer.write(start, data[start:start + 3]),
                      reversed(range(0, 40, 3))))
    np.testing.assert_array_equal(read_images(path), data)
    assert mrcfile.validate(str(path), print_file=io.StringIO())
    with mrcfile.new(tmp_path / "ref.mrcs") as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 1.25
    with mrcfile.open(path) as ours, mrcfile.open(tmp_path / "ref.mrcs") as ref:
        for field in ref.header.dtype.names:
            if field in ("label", "dmin", "dmax", "dmean", "rms"):
                continue
            np.testing.assert_array_equal(ours.header[field], ref.header[field], err_msg=field)
        assert (ours.header.dmin, ours.header.dmax) == (data.min(), data.max())
        assert ours.header.dmean == pytest.approx(data.mean(), abs=1e-6)
        assert ours.header.rms == pytest.approx(data.std(), rel=1e-5)


def test_stack_writer_refuses_images_outside_the_stack(tmp_path):
    with pytest.raises(ValueError, match="do not fit"), \
            StackWriter(tmp_path / "s.mrcs", 3, 8, 1.0) as w:
        w.write(2, np.zeros((2, 8, 8)))
    assert list(tmp_path.iterdir()) == []


def test_stack_reader_reads_into_a_given_buffer(tmp_path):
    from cryoweave.formats import StackReader

    data = np.random.default_rng(4).normal(size=(6, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "s.mrcs", data, 1.0, volume=False)
    reader = StackReader()
    buffer = np.empty((4, 8, 8), np.float32)
    paths = np.array([str(tmp_path / "s.mrcs")] * 4, dtype=object)
    got = reader.read(paths, np.array([1, 2, 3, 4]), 8, out=buffer)
    assert got is buffer
    np.testing.assert_array_equal(buffer, data[1:5])
    reader.read(paths[:2], np.array([5, 0]), 8, out=buffer[:2])  # scattered: memory map
    np.testing.assert_array_equal(buffer[:2], data[[5, 0]])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        reader.read(paths, np.array([1, 2, 3, 4]), 8, out=buffer[:3])
    reader.close()
