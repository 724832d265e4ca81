"""CPU facts that change INT8 defaults."""

from __future__ import annotations

from pathlib import Path

from reidctl.platform import cpu_flags, u8s8_saturates


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_flags(cpuinfo=str(info)) == ["avx2", "avx512f", "avx512_vnni"]
    assert cpu_flags(cpuinfo=str(tmp_path / "absent")) == []


def test_u8s8_saturates_only_on_x86_without_vnni() -> None:
    assert u8s8_saturates("x86_64", ["avx2"]) is True
    assert u8s8_saturates("x86_64", []) is True
    assert u8s8_saturates("x86_64", ["avx2", "avx512_vnni"]) is False
    assert u8s8_saturates("x86_64", ["avx_vnni"]) is False
    assert u8s8_saturates("aarch64", []) is False


def test_version_reports_the_packages_in_use(capsys) -> None:
    from importlib import metadata

    from reidctl import __version__
    from reidctl.cli import main

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"reidctl {__version__} (python ")
    for dist in ("torch", "onnxruntime", "numpy"):
        assert f"{dist} {metadata.version(dist)}" in out
