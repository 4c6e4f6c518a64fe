#!/usr/bin/env python3
"""Build the ocean-secret-store Docker image (docker/Dockerfile) with no network at ``docker build``.

    .venv/bin/python docker/build.py [--base-image IMAGE] [--tag NAME] [--build-arg K=V ...] [--json]

Steps, each printed with its duration:

1. base image: ``--base-image``, else ``python:3.11-slim-bookworm`` if the engine has it or can pull
   it, else a Debian bookworm made with debootstrap (as root), tagged
   ``ocean-secret-store-base:bookworm-<recipe hash>`` and cached as a tarball in
   ``$XDG_CACHE_HOME/ocean-secret-store/docker/`` (default ``~/.cache``);
2. wheelhouse: a wheel of every runtime dependency, at the version installed in this checkout's
   ``.venv`` (the one the tests ran against), cached under ``wheelhouse-<hash of the pins and of this
   Python's ABI and platform>``;
3. the project's wheel, built fresh from the working tree (with a fixed ``SOURCE_DATE_EPOCH``, so an
   unchanged tree gives the same bytes and Docker's cache holds);
4. the anvil platform binary the checkout installed (``ocean-secret-store anvil-path``);
5. a build context of those, and ``docker build`` tagged ``--tag`` (default
   ``ocean-secret-store:latest``) and ``<repository>:<hash of the context, 12 hex>``;
6. pruning: of the repository's content tags, the newest ``--keep`` (default 3, the new one included)
   stay and the older are removed, and so are this project's untagged images (a rebuild of the same
   context at another revision leaves the previous one untagged). An image a container still uses is
   kept (``docker rmi`` without force refuses it). ``--keep 0`` prunes nothing.

With ``--json`` the result is one JSON object on stdout (progress goes to stderr). Importable too:
``build_image(...)`` returns the same dict (tests/docker/conftest.py runs the script instead).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
DOCKERFILE: Final = Path(__file__).resolve().parent / "Dockerfile"
DEFAULT_TAG: Final = "ocean-secret-store:latest"
OFFICIAL_BASE: Final = "python:3.11-slim-bookworm"
BASE_REPOSITORY: Final = "ocean-secret-store-base"
#: The label every image built from docker/Dockerfile carries (untagged ones of ours are pruned by it).
TITLE_LABEL: Final = "org.opencontainers.image.title=ocean-secret-store"
PULL_TIMEOUT: Final = 60.0
#: A fixed timestamp for the project wheel's entries (1980-01-01, the earliest a zip file can hold).
SOURCE_DATE_EPOCH: Final = "315532800"

#: The debootstrap base. A change here (or of the mirror) is a new recipe, so a new tag and tarball.
BASE_RECIPE_VERSION: Final = 1
BASE_SUITE: Final = "bookworm"
BASE_VARIANT: Final = "minbase"
BASE_INCLUDE: Final = ("python3", "python3-venv", "ca-certificates")
MIRROR_ENV: Final = "OCEAN_SS_DEBIAN_MIRROR"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
BASE_CHANGES: Final = (
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["/bin/bash"]',
)
WHEELHOUSE_RECIPE_VERSION: Final = 1
#: What the wheel of the project is built from (copied to a scratch folder: no build/ or egg-info
#: of the checkout can leak stale files into it).
PROJECT_FILES: Final = ("pyproject.toml", "README.md", "ocean_secret_store")

Say = Callable[[str], None]


class BuildError(Exception):
    """A step failed; the message says which and why (the tail of the tool's output)."""


# -- small helpers -------------------------------------------------------------------------------


def _package() -> Any:
    """ocean_secret_store.tools of this checkout (docker/ is not a package: put the checkout first)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from ocean_secret_store import tools  # noqa: PLC0415 (after the path is set)

    return tools


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/ocean-secret-store/docker`` (default ``~/.cache/...``)."""
    path: Path = _package().user_cache_dir(environ) / "docker"
    return path


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(cmd: Sequence[str], *, timeout: float, what: str, env: Mapping[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
                                env=None if env is None else dict(env), cwd=cwd)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: no answer within {timeout:.0f} s ({' '.join(cmd[:3])} ...)") from None
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode}):\n{_tail(result.stderr + result.stdout)}")
    return result


def _stream(cmd: Sequence[str], *, timeout: float, what: str, out: IO[str]) -> None:
    """Run ``cmd`` with its output shown on ``out`` as it comes; on failure the tail is in the error."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        process = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found") from None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        with process:
            for line in process.stdout or ():
                out.write(line)
                out.flush()
                tail.append(line.rstrip("\n"))
            code = process.wait()
    finally:
        expired = not watchdog.is_alive()
        watchdog.cancel()
    if code != 0:
        why = f"not done within {timeout:.0f} s" if expired else f"failed (exit {code})"
        raise BuildError(f"{what} {why}:\n" + "\n".join(tail))


def _sha256_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path, say: Say) -> Iterator[None]:
    """An exclusive lock on ``path`` (two builds at once share the caches, one at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build holding {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def docker_has_image(name: str) -> bool:
    try:
        result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", name],
                                capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise BuildError("docker not found on PATH (docker/provision.sh installs and starts an engine)") from None
    except subprocess.TimeoutExpired:
        raise BuildError("the Docker engine did not answer within 60 s (docker image inspect)") from None
    return result.returncode == 0


def _inspect(name: str, template: str) -> str:
    return _run(["docker", "image", "inspect", "--format", template, name], timeout=60,
                what=f"docker image inspect {name}").stdout.strip()


# -- 1. the base image ---------------------------------------------------------------------------


def base_recipe(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {"recipe": BASE_RECIPE_VERSION, "suite": BASE_SUITE, "variant": BASE_VARIANT,
            "include": list(BASE_INCLUDE), "mirror": env.get(MIRROR_ENV) or DEFAULT_MIRROR,
            "arch": platform.machine(), "changes": list(BASE_CHANGES)}


def base_tag(recipe: Mapping[str, Any]) -> str:
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{_sha256_json(recipe)[:12]}"


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts /proc, /sys and maybe /dev in its target)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _remove_tree(path: Path, say: Say) -> None:
    """Remove a debootstrap target, never across a mount point still inside it (that would delete
    the host's /dev or /proc entries)."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60, check=False)
    left = _mounts_under(path)
    if left:
        say(f"left {path} in place: still mounted there: {', '.join(left)}")
        return
    shutil.rmtree(path, ignore_errors=True)


def _debootstrap(recipe: Mapping[str, Any], tarball: Path, say: Say) -> None:
    """Make the base root file system with debootstrap and write it to ``tarball`` (atomically)."""
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root: run docker/build.py as root, or pass --base-image with an "
                         f"image the engine has (e.g. {OFFICIAL_BASE} after `docker load`)")
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap not found: apt-get install debootstrap (docker/provision.sh does), "
                         "or pass --base-image")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    log = tarball.parent / "debootstrap.log"
    say(f"debootstrap {recipe['variant']} {recipe['suite']} from {recipe['mirror']} (about a minute; log {log})")
    try:
        with log.open("w") as out:
            code = subprocess.run(
                ["debootstrap", f"--variant={recipe['variant']}", f"--include={','.join(recipe['include'])}",
                 recipe["suite"], str(target), str(recipe["mirror"])],
                stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False).returncode
        if code != 0:
            raise BuildError(f"debootstrap failed (exit {code}):\n{_tail(log.read_text(errors='replace'))}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (target / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_name(tarball.name + f".{os.getpid()}.tmp")
        _run(["tar", "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*",
              "-C", str(target), "-cf", str(partial), "."], timeout=600, what="tar of the debootstrap tree")
        partial.replace(tarball)
    finally:
        _remove_tree(target, say)


def _import_base(tarball: Path, tag: str, recipe_hash: str) -> None:
    changes = [*BASE_CHANGES, f"LABEL org.ocean-secret-store.base-recipe={recipe_hash}"]
    cmd = ["docker", "import"]
    for change in changes:
        cmd += ["--change", change]
    _run([*cmd, str(tarball), tag], timeout=600, what=f"docker import {tarball.name}")


def _pull(image: str, say: Say, timeout: float = PULL_TIMEOUT) -> bool:
    try:
        result = subprocess.run(["docker", "pull", image], capture_output=True, text=True, timeout=timeout,
                                check=False)
    except subprocess.TimeoutExpired:
        say(f"docker pull {image}: no answer within {timeout:.0f} s")
        return False
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        say(f"docker pull {image}: {reason}")
        return False
    return True


def ensure_base(base_image: str | None, say: Say, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The base image to build on and where it came from: local, pulled, cache-tarball or debootstrap."""
    if base_image:
        if docker_has_image(base_image):
            return base_image, "local"
        if _pull(base_image, say):
            return base_image, "pulled"
        raise BuildError(f"--base-image {base_image}: the engine does not have it and cannot pull it")
    if docker_has_image(OFFICIAL_BASE):
        return OFFICIAL_BASE, "local"
    if _pull(OFFICIAL_BASE, say):
        return OFFICIAL_BASE, "pulled"
    recipe = base_recipe(environ)
    recipe_hash = _sha256_json(recipe)[:12]
    tag = base_tag(recipe)
    say(f"no {OFFICIAL_BASE}: using the debootstrap base {tag}")
    cache = cache_dir(environ)
    with _locked(cache / "build.lock", say):
        if docker_has_image(tag):
            return tag, "local"
        tarball = cache / f"base-{recipe_hash}.tar"
        source = "cache-tarball"
        if not tarball.is_file():
            _debootstrap(recipe, tarball, say)
            source = "debootstrap"
        _import_base(tarball, tag, recipe_hash)
    return tag, source


# -- 2. the wheelhouse of the runtime dependencies ---------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_pins(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """``name==version`` of every runtime dependency of the project, direct or not, at the version
    installed in the environment running this script (the checkout's .venv); not the test extra.

    :raises BuildError: a dependency is not installed, or at a version outside its range (run ``make setup``).
    """
    from packaging.requirements import Requirement  # noqa: PLC0415 (pytest's dependency; needed here only)

    declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("dependencies", [])
    todo: list[tuple[Requirement, str, frozenset[str]]] = [
        (Requirement(text), "pyproject.toml", frozenset({""})) for text in declared]
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, wanted_by, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        key = _canonical(req.name)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise BuildError(f"{req.name} (required by {wanted_by}) is not installed in {sys.prefix}: "
                             "run `make setup`") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise BuildError(f"{req.name} {dist.version} is installed in {sys.prefix}, but {wanted_by} requires "
                             f"{req.name}{req.specifier}: run `make setup`")
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        wanted = frozenset({"", *req.extras})
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        todo.extend((Requirement(text), f"{key} {dist.version}", wanted) for text in dist.requires or [])
    return sorted(pins.values(), key=str.lower)


def wheelhouse_key(pins: Sequence[str]) -> str:
    """The hash naming a wheelhouse: the pins and what decides which wheel fits (ABI, platform, libc)."""
    return _sha256_json({"recipe": WHEELHOUSE_RECIPE_VERSION, "pins": list(pins),
                         "python": sys.implementation.cache_tag, "soabi": sysconfig.get_config_var("SOABI"),
                         "platform": sysconfig.get_platform(), "libc": list(platform.libc_ver())})[:12]


def _wheel_name(filename: str) -> str:
    return _canonical(filename.split("-", 1)[0])


def ensure_wheelhouse(say: Say, environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The wheelhouse folder, and whether it was in the cache already."""
    pins = runtime_pins()
    cache = cache_dir(environ)
    target = cache / f"wheelhouse-{wheelhouse_key(pins)}"
    with _locked(cache / "build.lock", say):
        if target.is_dir():
            return target, True
        say(f"building wheels of {len(pins)} runtime dependencies into {target}")
        scratch = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
        try:
            _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(scratch), *pins],
                 timeout=1800, what="pip wheel of the runtime dependencies")
            have = {_wheel_name(p.name) for p in scratch.glob("*.whl")}
            missing = [pin for pin in pins if _canonical(pin.split("==")[0]) not in have]
            if missing:
                raise BuildError(f"pip wheel made no wheel for {', '.join(missing)}")
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target, False


# -- 3. the project's wheel ---------------------------------------------------------------------


def build_project_wheel(out: Path) -> Path:
    """The project's wheel, built from a copy of the working tree's package files into ``out``."""
    with tempfile.TemporaryDirectory(prefix="ocss-src-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in PROJECT_FILES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, source / name)
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
             timeout=600, what="pip wheel of the project", env=env)
    wheels = sorted(out.glob("ocean_secret_store-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one project wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


# -- 5. context and docker build ------------------------------------------------------------------


def context_hash(context: Path) -> str:
    """12 hex of a hash over every file of the context: its path, whether executable, its bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(context).as_posix()}\0{os.access(path, os.X_OK):d}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def repository_of(tag: str) -> str:
    """``ocean-secret-store`` of ``ocean-secret-store:latest`` (a registry's ``host:port/`` kept)."""
    last = tag.rsplit("/", 1)[-1]
    return tag[: len(tag) - len(last)] + last.split(":", 1)[0].split("@", 1)[0]


def _git(*args: str) -> str:
    """The output of a git command in the checkout, or "unknown" (no git, not a checkout, no such value)."""
    try:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                                check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "unknown"
    return (result.stdout.strip() or "unknown") if result.returncode == 0 else "unknown"


def _public_url(url: str) -> str:
    """``url`` without any user name or token in it (``https://user:token@host/...``)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.IGNORECASE)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_image(base_image: str | None = None, tag: str = DEFAULT_TAG, build_args: Mapping[str, str] | None = None,
                say: Say = lambda line: print(line, file=sys.stderr), out: IO[str] | None = None,
                keep: int = 3) -> dict[str, Any]:
    """Build the image; return what the CLI prints (see the module docstring)."""
    extra = dict(build_args or {})
    if "BASE_IMAGE" in extra:
        raise BuildError("give the base image with --base-image, not --build-arg BASE_IMAGE")
    seconds: dict[str, float] = {}
    started = time.monotonic()

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        begun = time.monotonic()
        yield
        seconds[name] = round(time.monotonic() - begun, 2)
        say(f"[{name}] {seconds[name]:.1f} s")

    with step("base"):
        base, base_source = ensure_base(base_image, say)
        say(f"base image {base} ({base_source})")
    with step("wheelhouse"):
        wheelhouse, cached = ensure_wheelhouse(say)
        say(f"wheelhouse {wheelhouse} ({'cached' if cached else 'built'})")
    with tempfile.TemporaryDirectory(prefix="ocss-docker-") as scratch:
        context = Path(scratch) / "context"
        (context / "wheels" / "deps").mkdir(parents=True)
        (context / "wheels" / "project").mkdir(parents=True)
        with step("project_wheel"):
            wheel = build_project_wheel(context / "wheels" / "project")
            version = wheel.name.split("-")[1]
            say(f"project wheel {wheel.name}")
        with step("anvil"):
            anvil = Path(_package().anvil_path())
            shutil.copy2(anvil, context / "anvil")
            (context / "anvil").chmod(0o755)
            say(f"anvil {anvil}")
        with step("context"):
            shutil.copy2(DOCKERFILE, context / "Dockerfile")
            for item in sorted(wheelhouse.glob("*.whl")):
                _link_or_copy(item, context / "wheels" / "deps" / item.name)
            content_tag = f"{repository_of(tag)}:{context_hash(context)}"
        args = {"BASE_IMAGE": base, "VERSION": version, "REVISION": _git("rev-parse", "HEAD"),
                "SOURCE": _public_url(_git("config", "--get", "remote.origin.url")), **extra}
        cmd = ["docker", "build", "--force-rm", "-t", tag, "-t", content_tag]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        with step("docker_build"):
            _stream([*cmd, str(context)], timeout=3600, what="docker build", out=out or sys.stderr)
    image_id = _inspect(tag, "{{.Id}}")
    size = int(_inspect(tag, "{{.Size}}"))
    with step("prune"):
        pruned = prune_images(repository_of(tag), content_tag, keep) if keep else []
        say(f"pruned {len(pruned)} older image(s)")
    seconds["total"] = round(time.monotonic() - started, 2)
    return {"image": tag, "content_tag": content_tag, "id": image_id, "version": version, "base_image": base,
            "base_source": base_source, "wheelhouse": str(wheelhouse), "wheelhouse_cached": cached,
            "size_bytes": size, "pruned": pruned, "seconds": seconds}


CONTENT_TAG: Final = re.compile(r"[0-9a-f]{12}")


def prune_images(repository: str, current: str, keep: int) -> list[str]:
    """Remove ``repository``'s content tags beyond the newest ``keep`` (``current`` always stays), then
    the project's untagged images; return what was removed. What a container uses stays (no force)."""
    listed = subprocess.run(["docker", "image", "ls", repository, "--format", "{{.Tag}}\t{{.CreatedAt}}"],
                            capture_output=True, text=True, timeout=60, check=False).stdout.splitlines()
    tags = sorted(((created, name) for name, _, created in (line.partition("\t") for line in listed)
                   if CONTENT_TAG.fullmatch(name) and f"{repository}:{name}" != current), reverse=True)
    removed = []
    for _, name in tags[max(keep - 1, 0):]:
        if subprocess.run(["docker", "rmi", f"{repository}:{name}"], capture_output=True, timeout=120,
                          check=False).returncode == 0:
            removed.append(f"{repository}:{name}")
    dangling = subprocess.run(["docker", "image", "ls", "-q", "--no-trunc", "--filter", "dangling=true", "--filter",
                               f"label={TITLE_LABEL}"], capture_output=True, text=True, timeout=60,
                              check=False).stdout.split()
    removed.extend(image for image in dict.fromkeys(dangling)
                   if subprocess.run(["docker", "rmi", image], capture_output=True, timeout=120,
                                     check=False).returncode == 0)
    return removed


def _build_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docker/build.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base-image", help=f"the image to build on (default: {OFFICIAL_BASE}, else a debootstrap "
                                             "bookworm made and cached here)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the image's name (default {DEFAULT_TAG})")
    parser.add_argument("--build-arg", action="append", type=_build_arg, default=[], metavar="KEY=VALUE",
                        help="passed on to docker build (repeatable)")
    parser.add_argument("--keep", type=int, default=3, metavar="N",
                        help="content tags of the repository kept, the new one included (default 3; 0: prune nothing)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.keep < 0:
        parser.error("--keep must be 0 or more")
    try:
        result = build_image(args.base_image, args.tag, dict(args.build_arg), keep=args.keep)
    except BuildError as exc:
        print(f"docker/build.py: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
        print(f"built {result['image']} = {result['content_tag']} ({result['id'][:19]}), "
              f"{result['size_bytes'] / 1e6:.0f} MB, on {result['base_image']} ({result['base_source']}); {steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
