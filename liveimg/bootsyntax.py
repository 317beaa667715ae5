"""What may go into each boot configuration syntax, and how it is written there.

Every value liveimg puts into ``pxelinux.cfg/default``, lorax's ``PXE_CONFIG``, ``boot.ipxe``,
``grub.cfg`` or a kernel command line passes through this module: a value is either checked
against what the syntax can carry unchanged, or quoted for it; what cannot be expressed safely
is refused with one line naming it (:class:`~liveimg.errors.InvalidImage` when it comes from the
image, :class:`~liveimg.errors.InvalidOptions` when from the caller).  The cloud-init seed
(YAML) and ``manifest.json`` are written by ``yaml.safe_dump`` and ``json.dumps``, never by
formatting strings; the caller's cloud-init values are checked here for what the *consumers*
of those files make of them (``authorized_keys`` and ``chpasswd`` are line based).

The syntaxes, as their parsers read them:

Linux kernel command line (``Documentation/admin-guide/kernel-parameters.rst``: "Double-quotes
    can be used to protect spaces in values, e.g. param="spaces in here""; ``next_arg()`` in
    ``kernel/params.c`` says "You can use \\" around spaces, but can't escape \\"").  Arguments
    are split on the kernel's ``isspace()``, which besides the ASCII blanks counts byte 0xA0 (so a
    UTF-8 character can split an argument); a ``"`` toggles quoting anywhere in a word, a
    leading ``"`` quotes the whole argument, and ``param="value"`` loses the quotes of the value.
    A bare ``--`` ends the kernel's parameters: everything after it goes to init.  dracut reads
    ``/proc/cmdline`` with the same rules (``dracut-getarg`` carries the kernel's ``next_arg``);
    systemd also takes ``'`` as a quote.
pxelinux and isolinux (syslinux ``readconfig.c``, shared by both)
    Line based: a line is read with ``fgets`` into a 4096-byte buffer (a longer line is cut and
    its rest read as the next line), cut at the first CR or LF; ``APPEND``, ``KERNEL`` and
    ``MENU LABEL`` take the rest of the line verbatim.  No quoting exists.
iPXE (``src/image/script.c``, ``src/core/exec.c``)
    A line ending in ``\\`` continues on the next; a line is split into words at every blank,
    with no quoting at all; a word ``&&``, ``||`` or ``;`` ends the command and starts another,
    a word starting with ``#`` starts a comment; ``${name}`` is expanded in every word.  The
    ``kernel`` command joins the words after the image with single spaces into its command line.
GRUB (grub.cfg, "Shell-like scripting" in the GRUB manual)
    Words are separated by blanks and the metacharacters ``{ } | & $ ; < >``; ``'...'`` keeps
    every character literally (no ``'`` inside), ``"..."`` still expands ``$``, ``\\`` escapes;
    a word starting with ``#`` is a comment.  Its ``linux`` command rebuilds the kernel command
    line from the words (``grub_create_loader_cmdline``): a word with a space is put in double
    quotes, and ``\\``, ``'`` and ``"`` get a backslash the kernel does not remove.

What follows, per value:

* a kernel argument (:func:`kernel_arg`) is refused with a control character, a non-ASCII
  character, ``'`` or ``\\`` (GRUB would pass them altered; systemd reads ``'`` as a quote), or
  ``${`` (iPXE expands it); blanks only as single spaces inside double quotes, in the forms
  ``param="value"`` and ``"param=value"``, and never making a word iPXE reads as an operator or
  a comment; a ``--`` from the image is refused (it would hand the rest of the line to init);
* a kernel version (:func:`kernel_version`) and a file name (:func:`file_name`) that become paths
  in a configuration match ``[A-Za-z0-9][A-Za-z0-9._+~-]*``;
* a URL (:func:`base_url`) is http(s), ftp, tftp or nfs with a host, no query or fragment, and
  only the characters of a URI path that none of the syntaxes treats specially;
* an ISO 9660 volume label (:func:`iso_label`, on the command line as ``CDLABEL=``) is 1 to 32
  d-characters (``A-Z``, ``0-9``, ``_``), ECMA-119's limits for the volume identifier;
* the menu title (:func:`label`, from the image's ``PRETTY_NAME``) is only a label: it is
  sanitised to letters, digits, blanks and ``._,:()+/!@=-`` rather than quoted, so that it reads
  the same in all three menus.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence

from liveimg.errors import InternalError, InvalidImage, InvalidOptions, LiveImgError

#: x86's COMMAND_LINE_SIZE: a longer command line is cut off by the kernel.
MAX_CMDLINE = 2048
#: syslinux reads a configuration line into a buffer of this size (the NUL included).
PXELINUX_MAX_LINE = 4096
#: Longest kernel version or file name accepted (real ones are under 64 characters).
MAX_NAME = 128
#: Longest menu label written (a longer title is cut).
MAX_LABEL = 80
#: Longest TFTP directory accepted.
MAX_DIR = 256


class Source(enum.Enum):
    """Who gave a value, which decides the error when it is refused."""

    GUEST = "guest"  # the image (or a manifest.json read back): InvalidImage
    CALLER = "caller"  # the options: InvalidOptions


def _show(value: object, limit: int = 60) -> str:
    """A value as an error message shows it: repr (so one line), cut if long."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def _refuse(source: Source, message: str, hint: str | None = None) -> LiveImgError:
    if source is Source.GUEST:
        return InvalidImage(message, hint=hint)
    return InvalidOptions(message, hint=hint)


# --- names and paths ------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one path component no syntax reads specially: letters, digits and
    ``. _ + ~ -``, starting with a letter or digit (so never ``.``, ``..`` or an option)."""
    return isinstance(name, str) and len(name) <= MAX_NAME and _NAME.fullmatch(name) is not None


def is_kernel_version(version: str) -> bool:
    """Whether ``version`` is a kernel version liveimg puts into paths and configurations: a
    plain name.  Real ones: ``6.1.0-28-amd64`` (Debian), ``6.11.4-301.fc41.x86_64`` (Fedora),
    ``5.14.0-427.el9_4.x86_64+debug`` (RHEL), ``6.8.0-45-generic`` (Ubuntu),
    ``6.4.0-150600.23.25-default`` (SUSE), ``6.12.0-rc7+`` (a local build).
    """
    return is_plain_name(version)


def kernel_version(version: str, *, where: str) -> str:
    """``version``, a kernel version read from the image, if it is one (else InvalidImage)."""
    if not is_kernel_version(version):
        raise InvalidImage(
            f"{where}: the kernel version {_show(version)} is not a plain version "
            "(letters, digits and . _ + ~ - only, starting with a letter or digit)"
        )
    return version


def file_name(name: str, *, what: str, source: Source = Source.GUEST) -> str:
    """``name``, a file name written into configurations, if it is a plain one."""
    if not is_plain_name(name):
        raise _refuse(source, f"{what} {_show(name)} is not a plain file name (letters, digits and . _ + ~ -)")
    return name


_DIR_PART = re.compile(r"[A-Za-z0-9._+~-]+")


def tftp_path(path: str, *, source: Source = Source.GUEST) -> str:
    """``path``, a file's place under the TFTP root (``grub/grub.cfg``), if it is a plain relative one.

    Each part is a plain name and neither ``.`` nor ``..``: the path is written to inside the
    output directory and must stay there.
    """
    parts = path.split("/")
    if len(path) > MAX_DIR or not all(_DIR_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise _refuse(source, f"the TFTP path {_show(path)} is not a plain relative path (names joined by /)")
    return path


def tftp_dir(path: str) -> str:
    """``--pxe-dir``: the TFTP directory of the kernel and initramfs, without a trailing ``/``."""
    stripped = path.rstrip("/")
    if not stripped:  # "" and "/" both mean: the TFTP root
        return ""
    parts = stripped.split("/")
    if parts[0] == "":  # absolute
        parts = parts[1:]
    if len(path) > MAX_DIR or not all(_DIR_PART.fullmatch(p) for p in parts):
        raise InvalidOptions(
            f"invalid --pxe-dir {_show(path)}", hint="a path of letters, digits and . _ + ~ - separated by /"
        )
    return stripped


_OSTREE_PATH = re.compile(r"/ostree/boot\.[0-9]+/[A-Za-z0-9._+~-]+/[A-Za-z0-9._+~-]+/[0-9]+")


def ostree_path(value: str) -> str:
    """The value of ``ostree=`` (``/ostree/boot.N/<os>/<bootcsum>/<serial>``) from the image's
    boot entry, if its names are plain (else InvalidImage)."""
    if not isinstance(value, str) or len(value) > MAX_DIR or not _OSTREE_PATH.fullmatch(value):
        raise InvalidImage(
            f"the deployment's ostree={_show(value)} is not /ostree/boot.N/OSNAME/BOOTCSUM/SERIAL "
            "with plain names (letters, digits and . _ + ~ -)"
        )
    return value


_SCHEMES = ("http", "https", "ftp", "tftp", "nfs", "nfs4", "nbd")
#: The port of an ``nbd://`` URL that names none (IANA's for NBD).
NBD_PORT = 10809
#: ``nbd://HOST[:PORT][/PATH]``: no user information, no ``%`` (the live initramfs hands the
#: export name to nbd-client as it is, undecoded).
_NBD_URL = re.compile(
    r"nbd://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>(?:/[A-Za-z0-9._~!=+,:@-]*)*)"
)
_URL = re.compile(
    r"(?P<scheme>[a-z0-9]+)://"
    r"(?P<host>(?:[A-Za-z0-9._~%!=+,-]+(?::[A-Za-z0-9._~%!=+,-]*)?@)?"  # userinfo, as ftp takes it
    r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?)"
    r"(?P<path>(?:/[A-Za-z0-9._~%!=+,:@-]*)*)"
)


def base_url(url: str) -> str:
    """``--url``: where the artifacts will be served, without a trailing slash.

    Names are appended to it (``<URL>/live-rootfs.squashfs.img``), so it has no query or
    fragment; it has none of the characters a configuration syntax reads specially (blanks,
    quotes, ``\\``, ``$``, ``&``, ``;``, ``#``, ...); ``%`` only as a ``%XX`` escape.  An
    ``nbd://HOST[:PORT][/PATH]`` URL (:func:`nbd_export`) has no user information and no ``%``.
    """
    match = _URL.fullmatch(url)
    if (
        match is None
        or match.group("scheme") not in _SCHEMES
        or re.search(r"%(?![0-9A-Fa-f]{2})", url)
        or len(url) > MAX_CMDLINE // 2
        or (match.group("scheme") == "nbd" and _nbd_parts(url) is None)
    ):
        raise InvalidOptions(
            f"invalid --url {_show(url)}",
            hint="give the http(s), ftp, tftp, nfs or nbd URL of a directory: no blanks, quotes, query or "
            "fragment; percent-encode other characters (nbd: none, and no user)",
        )
    return url.rstrip("/")


def is_nbd(url: str) -> bool:
    """Whether ``url`` is an ``nbd://`` URL: the live initramfs reads the live file as a block device."""
    return url.startswith("nbd://")


def _nbd_parts(url: str) -> tuple[str, int, str] | None:
    match = _NBD_URL.fullmatch(url)
    if match is None:
        return None
    port = int(match.group("port") or NBD_PORT)
    if not 0 < port < 65536:
        return None
    return match.group("host").strip("[]"), port, match.group("path").strip("/")


def nbd_export(url: str) -> tuple[str, int, str]:
    """``nbd://HOST[:PORT]/EXPORT`` (the live file's URL, ``<--url>/<file>``) as (host, port, export name).

    The export name is the path without its leading ``/``; an IPv6 host loses its brackets.
    """
    parts = _nbd_parts(url)
    if parts is None or not parts[2]:
        raise InvalidOptions(f"invalid NBD URL {_show(url)}", hint="give nbd://HOST[:PORT]/EXPORT")
    return parts


# --- the kernel command line ----------------------------------------------------------------------

#: A character of an argument outside quotes: printable ASCII but blank, ", ' and \.
_PLAIN = r"[!#-&(-\[\]-~]"
_ARG_FORMS = (
    re.compile(rf"(?P<word>{_PLAIN}+)"),  # param or param=value
    re.compile(rf'(?P<param>[!#-&(-<>-\[\]-~]+)="(?P<value>(?:{_PLAIN}| )*)"'),  # param="value"
    re.compile(rf'"(?P<whole>(?:{_PLAIN}| )+)"'),  # "param=value", quoted whole
)
#: Words iPXE reads as operators (they end the command and start another).
_IPXE_OPERATORS = frozenset({"&&", "||", ";"})


def _unsafe_char(arg: str) -> str | None:
    """Why ``arg`` has a character no syntax carries unchanged, or None."""
    for ch in arg:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            return f"a control character ({ch!r})"
        if code > 0x7E:
            return f"a non-ASCII character ({ch!r}; the kernel splits at byte 0xA0)"
    if "'" in arg:
        return "a ' (GRUB passes it as \\', and systemd takes it for a quote)"
    if "\\" in arg:
        return "a \\ (GRUB passes it doubled)"
    if "${" in arg:
        return "${ (iPXE expands it)"
    return None


def _why_not(arg: str, source: Source) -> str | None:
    """Why ``arg`` cannot be one kernel argument in every syntax, or None if it can."""
    if not arg:
        return "it is empty"
    if len(arg) > MAX_CMDLINE:
        return f"it is longer than {MAX_CMDLINE} bytes, the limit of the whole command line"
    why = _unsafe_char(arg)
    if why:
        return f"it has {why}"
    if not any(form.fullmatch(arg) for form in _ARG_FORMS):
        if " " in arg:
            return 'it has a blank outside double quotes (one argument each, or param="a value")'
        return 'its double quotes are not param="value" or "param=value"'
    if not kernel_arg_meaning(arg)[0]:
        return "it has no parameter name before ="
    words = arg.split(" ")
    if "" in words:
        return "it has consecutive blanks inside quotes (iPXE would join them into one)"
    for word in words:
        if word in _IPXE_OPERATORS or word.startswith("#"):
            return f"it has the word {word!r}, which iPXE reads as an operator or a comment"
    if arg == "--" and source is Source.GUEST:
        return "-- hands the rest of the command line to init"
    return None


def kernel_arg(arg: str, *, what: str, source: Source, hint: str | None = None) -> str:
    """``arg`` if it is one kernel argument that every syntax carries unchanged (see the module)."""
    why = _why_not(arg, source) if isinstance(arg, str) else "it is not a string"
    if why is not None:
        raise _refuse(source, f"{what} {_show(arg)} cannot be put on a kernel command line: {why}", hint)
    return arg


def kernel_args(args: Iterable[str], *, what: str, source: Source, hint: str | None = None) -> list[str]:
    """Each of ``args`` through :func:`kernel_arg`."""
    return [kernel_arg(a, what=what, source=source, hint=hint) for a in args]


def kernel_arg_meaning(arg: str) -> tuple[str, str | None]:
    """(parameter, value or None) of a checked argument, as the kernel reads it."""
    text = arg[1:-1] if arg.startswith('"') else arg
    param, eq, value = text.partition("=")
    if eq and value.startswith('"'):
        value = value[1:-1]
    return param, value if eq else None


def kernel_arg_key(arg: str) -> str:
    """The parameter name of an argument (``ip`` of ``ip=dhcp``), to tell which replace which."""
    return kernel_arg_meaning(arg)[0] if not _why_not(arg, Source.CALLER) else arg.split("=", 1)[0]


def command_line(args: Sequence[str]) -> str:
    """The kernel command line of checked arguments; longer than the kernel takes is refused."""
    line = " ".join(args)
    if len(line) > MAX_CMDLINE:
        raise InvalidOptions(f"the kernel command line is longer than {MAX_CMDLINE} bytes ({len(line)})")
    return line


# --- pxelinux -------------------------------------------------------------------------------------


class PxelinuxConfig:
    """A pxelinux configuration (also lorax's ``PXE_CONFIG``), built one checked line at a time.

    Values are put on the line as they are (pxelinux has no quoting), so they must have been
    checked already (:func:`kernel_arg`, :func:`file_name`, :func:`label`, ...); :meth:`line`
    still refuses a line break or a line longer than syslinux's buffer, as a bug (InternalError).
    """

    def __init__(self, comment: str) -> None:
        self._lines: list[str] = []
        self.line(f"# {comment}")

    def line(self, text: str) -> None:
        if any(c in text for c in "\r\n\0") or len(text.encode()) >= PXELINUX_MAX_LINE - 1:
            raise InternalError(f"a pxelinux line cannot hold {_show(text)}")
        self._lines.append(text)

    def directive(self, keyword: str, *values: str, indent: int = 0) -> None:
        """``KEYWORD value...``: the values (checked words or args) joined with single spaces."""
        self.line(" " * indent + " ".join((keyword, *values)))

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


#: isolinux reads its configuration with pxelinux's parser: the same class writes both.
SyslinuxConfig = PxelinuxConfig


# --- ISO 9660 -------------------------------------------------------------------------------------

#: ECMA-119 8.4.6: the volume identifier is 32 d-characters.
MAX_ISO_LABEL = 32
_D_CHARACTERS = re.compile(r"[A-Z0-9_]+")


def iso_label(value: str, *, source: Source = Source.CALLER) -> str:
    """``value`` if it is an ISO 9660 volume identifier: 1 to 32 d-characters (``A-Z 0-9 _``).

    It is also the ``root=live:CDLABEL=`` value, which udev finds as ``/dev/disk/by-label/``;
    d-characters need no quoting in any configuration syntax.
    """
    if not isinstance(value, str) or not _D_CHARACTERS.fullmatch(value) or len(value) > MAX_ISO_LABEL:
        raise _refuse(
            source,
            f"invalid --iso-label {_show(value)}: an ISO 9660 volume label is 1 to {MAX_ISO_LABEL} "
            "characters A-Z, 0-9 and _",
        )
    return value


def iso_label_from(*parts: str | None) -> str:
    """A volume label made of ``parts`` (lorax's ``<name>-<version>-<arch>``) in d-characters:
    upper case, every run of other characters one ``_``, cut to 32; ``LIVE`` if nothing is left."""
    words = [re.sub(r"[^A-Z0-9]+", "_", p.upper()).strip("_") for p in parts if p]
    text = "_".join(w for w in words if w)[:MAX_ISO_LABEL].rstrip("_")
    return text or "LIVE"


# --- iPXE -----------------------------------------------------------------------------------------


def ipxe_words(value: str) -> list[str]:
    """The iPXE words of a checked value: iPXE joins them back with single spaces."""
    words = value.split(" ")
    for word in words:
        if (
            not word
            or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in word)
            or word in _IPXE_OPERATORS
            or word.startswith("#")
            or "${" in word
            or word.endswith("\\")
        ):
            raise InternalError(f"an iPXE script cannot hold {_show(value)} as it is")
    return words


class IpxeScript:
    """An iPXE script, one command a line.

    Every word is checked again (:func:`ipxe_words`) so that a line stays one command whatever
    it was given: a value that slips through unchecked is a bug (InternalError), not a command.
    """

    def __init__(self, comment: str) -> None:
        self._lines = ["#!ipxe", f"# {' '.join(ipxe_words(comment))}"]

    def command(self, name: str, *values: str) -> None:
        """``name value...``: each value one word, or a checked kernel argument (several words)."""
        words = [name]
        for value in values:
            words += ipxe_words(value)
        self._lines.append(" ".join(words))

    def label(self, name: str) -> None:
        """``:name``, where a ``goto name`` lands."""
        self._lines.append(f":{ipxe_label(name)}")

    def menu(self, title: str, items: Sequence[tuple[str, str]], *, default: str, timeout_ms: int) -> None:
        """A menu of ``items`` (label, text) that jumps to the chosen label, ``default`` after ``timeout_ms``."""
        self.command("menu", title)
        for name, text in items:
            self.command("item", ipxe_label(name), text)
        if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms < 0:
            raise InternalError(f"an iPXE menu timeout cannot be {timeout_ms!r}")
        # The one line with a variable, made of checked labels only.
        self._lines.append(f"choose --default {ipxe_label(default)} --timeout {timeout_ms} target && goto ${{target}}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


_IPXE_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


def ipxe_label(name: str) -> str:
    """``name`` if it can be an iPXE script label (letters, digits, ``_`` and ``-``), else an InternalError."""
    if not _IPXE_LABEL.fullmatch(name):
        raise InternalError(f"an iPXE label cannot be {_show(name)}")
    return name


# --- GRUB -----------------------------------------------------------------------------------------

_GRUB_BARE = re.compile(r"[A-Za-z0-9_.,:/=@%+-]+")


def grub_word(word: str) -> str:
    """``word`` written so that GRUB's lexer reads it back as exactly one word, unchanged."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
        raise InternalError(f"grub.cfg cannot hold {_show(word)}")
    if _GRUB_BARE.fullmatch(word):
        return word
    # Single quotes keep every character literally; a ' itself is closed, escaped, reopened.
    return "'" + word.replace("'", "'\\''") + "'"


def grub_linux_word(arg: str) -> str:
    """The word GRUB's ``linux`` must get for a checked kernel argument ``arg``.

    GRUB rebuilds the command line from its words, double-quoting those with a space, so it
    gets the argument without its quotes: ``param="a b"`` becomes the word ``param=a b``,
    which GRUB passes as ``"param=a b"``, the same parameter and value for the kernel.
    """
    param, value = kernel_arg_meaning(arg)
    return param if value is None else f"{param}={value}"


class GrubConfig:
    """A grub.cfg, one command a line; every word quoted by :func:`grub_word`."""

    def __init__(self, comment: str) -> None:
        self._lines = [f"# {comment}"]
        self._depth = 0
        grub_word(comment)  # a comment must be one line too

    def command(self, name: str, *words: str) -> None:
        self._lines.append("    " * self._depth + " ".join([name, *(grub_word(w) for w in words)]))

    def begin(self, name: str, *words: str) -> None:
        """``name words... {``: a block (``menuentry``) until :meth:`end`."""
        self._lines.append("    " * self._depth + " ".join([name, *(grub_word(w) for w in words), "{"]))
        self._depth += 1

    def end(self) -> None:
        self._depth -= 1
        self._lines.append("    " * self._depth + "}")

    def text(self) -> str:
        if self._depth:
            raise InternalError("grub.cfg: a block is not closed")
        return "\n".join(self._lines) + "\n"


# --- labels ---------------------------------------------------------------------------------------

_LABEL_DROP = re.compile(r"[^A-Za-z0-9 ._,:()+/!@=-]+")
_BLANKS = re.compile(r"[\x00-\x20\x7f-\x9f]+")


def label(title: str, default: str = "Linux") -> str:
    """A menu label from the image's ``PRETTY_NAME``: sanitised, not quoted (it is only a label).

    Characters outside letters, digits, blanks and ``._,:()+/!@=-`` are dropped, blanks
    collapsed, and the result cut to :data:`MAX_LABEL` characters; an empty result is ``default``.
    """
    text = " ".join(_LABEL_DROP.sub("", _BLANKS.sub(" ", title)).split())[:MAX_LABEL].strip()
    return text or default


# --- cloud-init values ----------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def hostname(name: str) -> str:
    """``--ci-hostname``: an RFC 1123 host name (dot-separated labels), at most 253 characters."""
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise InvalidOptions(
            f"invalid --ci-hostname {_show(name)}",
            hint="letters, digits and - in dot-separated parts of at most 63 characters",
        )
    return name


def single_line(value: str, *, what: str) -> str:
    """``value`` if it is one line of printable characters (``authorized_keys`` and ``chpasswd``
    read their input by lines: a newline would add a key or set another user's password)."""
    if not value or not value.isprintable():
        bad = next((c for c in value if not c.isprintable()), "")
        raise InvalidOptions(f"{what} {_show(value)} must be one line of printable characters (has {bad!r})")
    return value


__all__ = [
    "MAX_CMDLINE",
    "MAX_ISO_LABEL",
    "NBD_PORT",
    "GrubConfig",
    "IpxeScript",
    "PxelinuxConfig",
    "Source",
    "SyslinuxConfig",
    "base_url",
    "command_line",
    "file_name",
    "grub_linux_word",
    "grub_word",
    "hostname",
    "ipxe_words",
    "is_kernel_version",
    "is_nbd",
    "is_plain_name",
    "iso_label",
    "iso_label_from",
    "kernel_arg",
    "kernel_arg_key",
    "kernel_arg_meaning",
    "kernel_args",
    "kernel_version",
    "label",
    "nbd_export",
    "ostree_path",
    "single_line",
    "tftp_dir",
    "tftp_path",
]
