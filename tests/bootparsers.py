"""How the programs that read liveimg's boot configurations read them, for the tests.

Two kinds of reader:

* real ones where this machine has them: GRUB itself (``grub-emu``, Debian package grub-emu,
  runs a grub.cfg in user space: :func:`grub_emu_boot`), GRUB's syntax checker
  (``grub-script-check``, grub-common), and dracut's ``dracut-getargs`` (dracut-core), which
  reads the kernel command line with the kernel's own ``next_arg()``;
* reference models written from the documented rules where no reader runs here: the kernel's
  splitting (:func:`kernel_split`), iPXE's script reader (:func:`ipxe_commands`) and
  syslinux's configuration reader (:func:`pxelinux_directives`), and GRUB's rebuilding of the
  command line for the kernel (:func:`grub_loader_cmdline`).  Each cites its rule; none is
  copied from those projects' code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from liveimg import run as runner

# --- the Linux kernel command line ----------------------------------------------------------------

#: The kernel's isspace(): the ASCII blanks, and byte 0xA0 (lib/ctype.c marks it as a space).
KERNEL_BLANKS = " \t\n\v\f\r\xa0"


def kernel_split(line: str) -> list[tuple[str, str | None]]:
    """(parameter, value or None) of each argument, by the kernel's documented rules.

    Documentation/admin-guide/kernel-parameters.rst: "Double-quotes can be used to protect
    spaces in values, e.g.: param="spaces in here""; the comment of next_arg() in
    kernel/params.c: "You can use \" around spaces, but can't escape \"".  So: an argument
    ends at a blank outside double quotes, and every ``"`` switches quoting on or off; the
    first ``=`` separates the parameter from its value; a value starting with ``"`` loses it
    and the ``"`` that ends the argument; an argument starting with ``"`` loses it, and its
    last ``"`` unless that one was already taken off the value.
    """
    found: list[tuple[str, str | None]] = []
    pos = 0
    while True:
        while pos < len(line) and line[pos] in KERNEL_BLANKS:
            pos += 1
        if pos >= len(line):
            return found
        whole = line[pos] == '"'
        start = pos + 1 if whole else pos
        quoting, end = whole, start
        while end < len(line) and (quoting or line[end] not in KERNEL_BLANKS):
            quoting ^= line[end] == '"'
            end += 1
        text = line[start:end]
        pos = end + 1
        param, equals, value = text.partition("=")
        trailing_taken = False
        if equals and value.startswith('"'):
            value = value[1:]
            if value.endswith('"'):
                value, trailing_taken = value[:-1], True
        elif not equals and whole and text.endswith('"'):
            param, trailing_taken = param[:-1], True
        if whole and not trailing_taken and equals and value.endswith('"'):
            value = value[:-1]
        found.append((param, value if equals else None))


def dracut_getargs(tmp: Path, cmdline: str, key: str) -> list[str] | None:
    """What dracut's ``getargs KEY`` finds in ``cmdline`` (each value, or the key for a flag);
    None when the key is absent.  ``dracut-util`` run as ``dracut-getargs`` reads ``$CMDLINE``
    with the kernel's next_arg(), as dracut does ``/proc/cmdline`` in the live boot."""
    tool = tmp / "dracut-getargs"
    if not tool.exists():
        tool.symlink_to(DRACUT_UTIL)
    done = runner.run([tool, key], env={"CMDLINE": cmdline}, check=False, package="dracut-core")
    return done.stdout.splitlines() if done.returncode == 0 else None


DRACUT_UTIL = "/usr/lib/dracut/dracut-util"


# --- GRUB -------------------------------------------------------------------------------------------


def grub_loader_cmdline(words: Sequence[str]) -> str:
    """The kernel command line GRUB's ``linux`` makes of its words (grub_create_loader_cmdline,
    grub-core/lib/cmdline.c): a word with a space is put in double quotes, and a backslash is
    written before every ``\\``, ``'`` and ``"`` (but for ``\\xHH``), words joined by one space."""
    out = []
    for word in words:
        escaped = re.sub(r"""\\(?![x][0-9A-Fa-f]{2})|['"]""", lambda m: "\\" + m.group(0), word)
        out.append(f'"{escaped}"' if " " in word else escaped)
    return " ".join(out)


def grub_script_check(cfg: Path) -> str:
    """Run grub-script-check on ``cfg``; '' if it is valid, else what it said."""
    done = runner.run(["grub-script-check", cfg], check=False, package="grub-common")
    return "" if done.returncode == 0 else (done.stderr or done.stdout or f"exit {done.returncode}")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def grub_emu_boot(cfg: Path, work: Path) -> tuple[str, list[list[str]]]:
    """Boot the default entry of ``cfg`` in GRUB itself (grub-emu): (the entry's title as GRUB
    holds it, the words of each ``linux`` and ``initrd`` command it runs, command name first).

    ``linux`` and ``initrd`` are replaced by GRUB functions that print the title (``$chosen``)
    and each of their words: what GRUB's lexer and parser made of the generated file, and
    nothing else.  GRUB's console wraps long lines, so a value is printed in pieces of at most
    30 characters (cut by GRUB's ``regexp``), each between markers holding a ``'``, which no
    checked argument or label has.
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / "grub.cfg").write_text(
        "set pager=0\n"
        "function show {\n"
        '  set rest="$2"\n'
        "  echo \"'$1'\"\n"
        "  while regexp --set=1:c --set=2:rest -- '^(.{1,30})(.*)$' \"$rest\"; do echo \"'P'${c}'/P'\"; done\n"
        "  echo \"'/$1'\"\n"
        "}\n"
        'function linux { show T "$chosen"; for w in linux "$@"; do show W "$w"; done; echo "\'C\'"; }\n'
        'function initrd { for w in initrd "$@"; do show W "$w"; done; echo "\'C\'"; echo "\'END\'"; halt; }\n'
        f"source (host){cfg.absolute()}\n"
        "set timeout=0\n"
    )
    done = runner.run(["grub-emu", "-d", work, "-r", "host"], timeout=60, check=False, package="grub-emu")
    text = _ANSI.sub("", done.stdout + done.stderr).replace("\r", "")
    if "'END'" not in text:
        raise AssertionError(f"GRUB did not boot the entry of {cfg}: {text}")
    title = ""
    commands: list[list[str]] = [[]]
    pieces: list[str] = []
    for opened, piece, closed, end in re.findall(r"'([TW])'|'P'(.*?)'/P'|'/([TW])'|'(C|END)'", text):
        if opened:
            pieces = []
        elif closed == "T":
            title = "".join(pieces)
        elif closed == "W":
            commands[-1].append("".join(pieces))
        elif end == "C":
            commands.append([])
        elif end == "END":
            break
        else:
            pieces.append(piece)
    return title, [c for c in commands if c]


# --- iPXE -------------------------------------------------------------------------------------------

#: iPXE's isspace() (include/ctype.h).
IPXE_BLANKS = " \t\n\v\f\r"


def ipxe_commands(script: str) -> list[list[str]]:
    """The commands iPXE runs from a script, each as its words before expansion.

    src/image/script.c: a line ends at LF, a trailing CR is dropped, a line ending in ``\\``
    continues on the next, and a leading ``:label`` is a label.  src/core/exec.c: a line is
    split into words at blanks (no quoting exists); a word ``&&``, ``||`` or ``;`` ends a
    command and starts the next; a word starting with ``#`` starts a comment to the end of
    the line.  (``${...}`` in a word is expanded afterwards: see :func:`ipxe_expansions`.)
    """
    commands: list[list[str]] = []
    pending = ""
    for raw in script.split("\n"):
        line = pending + (raw[:-1] if raw.endswith("\r") else raw)
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        words = re.split(f"[{re.escape(IPXE_BLANKS)}]+", line.strip(IPXE_BLANKS)) if line.strip(IPXE_BLANKS) else []
        if words and words[0].startswith(":"):
            words = words[1:]
        current: list[str] = []
        for word in words:
            if word.startswith("#"):
                break
            if word in ("&&", "||", ";"):
                commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return commands


def ipxe_expansions(word: str) -> list[str]:
    """The ``${...}`` settings iPXE would expand in a word (expand_settings(), core/settings.c)."""
    return re.findall(r"\$\{[^}]*\}", word)


# --- pxelinux ---------------------------------------------------------------------------------------

#: syslinux reads a line with fgets() into a buffer of this size (readconfig.c, MAX_LINE).
PXELINUX_BUFFER = 4096


def pxelinux_directives(text: str) -> list[tuple[str, str]]:
    """(keyword, rest of the line) of each directive, as syslinux's readconfig.c reads them.

    A line is what fgets() returns into a 4096-byte buffer (a longer line comes back in
    pieces, each read as a line), cut at its first CR and its first LF; leading blanks are
    skipped; the keyword is matched without case (``MENU LABEL`` is two words), and the value
    is the rest of the line after blanks, verbatim.  Lines starting with ``#`` match no keyword.
    """
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        newline = text.find("\n", pos, pos + PXELINUX_BUFFER - 1)
        end = newline + 1 if newline >= 0 else min(len(text), pos + PXELINUX_BUFFER - 1)
        line = text[pos:end]
        pos = end
        line = line.split("\r", 1)[0].split("\n", 1)[0].split("\0", 1)[0].lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.lower() == "menu":
            second, _, rest = rest.lstrip(" ").partition(" ")
            keyword = f"menu {second.lower()}"
        found.append((keyword.lower(), rest.lstrip(" \t")))
    return found
