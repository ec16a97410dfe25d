"""libcurl is dlopen()ed, never linked (src/libkegbot/curl-dl.c): the programs that speak HTTP carry
the ELF .note.dlopen metadata (https://systemd.io/ELF_DLOPEN_METADATA/) naming it, read back here
from the built binaries with a small ELF parser; a standalone core never maps libcurl, a server-mode
core does. (Without a loadable libcurl: test_core_no_libcurl.py.)"""
import json
import shutil
import struct
import subprocess
import unittest

import kbtest
from coretest import Core

NOTE_OWNER = b"FDO"
NOTE_TYPE = 0x407C0C0A
SHT_NOTE, SHT_DYNAMIC = 7, 6
SHF_ALLOC = 2
DT_NEEDED = 1


class Elf:
    """Just enough of ELF64 little-endian: section headers, notes, DT_NEEDED."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        d = self.data
        if d[:4] != b"\x7fELF" or d[4] != 2 or d[5] != 1:
            raise ValueError("%s: not a little-endian ELF64 file" % path)
        shoff, = struct.unpack_from("<Q", d, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        self.sections = []
        for i in range(shnum):
            name, typ, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
                "<IIQQQQIIQQ", d, shoff + i * shentsize)
            self.sections.append(dict(name=name, type=typ, flags=flags, off=off, size=size, link=link,
                                      align=align))
        strtab = self.sections[shstrndx]
        for s in self.sections:
            start = strtab["off"] + s["name"]
            s["name"] = d[start:d.index(b"\0", start)].decode()

    def section(self, name):
        return next((s for s in self.sections if s["name"] == name), None)

    def notes(self):
        """(section name, owner, type, descriptor) of every note."""
        for s in self.sections:
            if s["type"] != SHT_NOTE:
                continue
            pos, end = s["off"], s["off"] + s["size"]
            while pos + 12 <= end:
                namesz, descsz, typ = struct.unpack_from("<III", self.data, pos)
                pos += 12
                owner = self.data[pos:pos + namesz].rstrip(b"\0")
                pos += (namesz + 3) & ~3
                desc = self.data[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                yield s["name"], owner, typ, desc

    def needed(self):
        dyn = next((s for s in self.sections if s["type"] == SHT_DYNAMIC), None)
        if not dyn:
            return []
        strtab = self.sections[dyn["link"]]
        out = []
        for off in range(dyn["off"], dyn["off"] + dyn["size"], 16):
            tag, val = struct.unpack_from("<qQ", self.data, off)
            if tag == DT_NEEDED:
                start = strtab["off"] + val
                out.append(self.data[start:self.data.index(b"\0", start)].decode())
        return out


def dlopen_notes(path):
    return [(sec, desc) for sec, owner, typ, desc in Elf(path).notes() if owner == NOTE_OWNER and typ == NOTE_TYPE]


def maps(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read()


class DlopenNoteTest(unittest.TestCase):
    def check_note(self, program):
        path = kbtest.binary(program)
        notes = dlopen_notes(path)
        self.assertEqual(len(notes), 1, "%s: %r" % (program, notes))
        section, desc = notes[0]
        self.assertEqual(section, ".note.dlopen")
        # The descriptor is NUL-terminated JSON, zero-padded; the section allocated and 4-aligned.
        self.assertTrue(desc.endswith(b"\0"))
        meta = json.loads(desc.rstrip(b"\0").decode("utf-8"))
        self.assertEqual(meta, [{
            "feature": "http",
            "description": "HTTP client: Kegbot Server API in server mode, lcd_daemon and sound_server polls",
            "priority": "recommended",
            "soname": ["libcurl.so.4"],
        }])
        sec = Elf(path).section(".note.dlopen")
        self.assertTrue(sec["flags"] & SHF_ALLOC)
        self.assertEqual(sec["align"] % 4, 0)
        # And no link-time dependency: that is what the note stands in for.
        self.assertFalse([n for n in Elf(path).needed() if "curl" in n], Elf(path).needed())
        self.assertIn("libc.so.6", Elf(path).needed())
        return meta

    def test_core_note(self):
        self.check_note("kegbot_core")

    def test_extras_notes(self):
        self.check_note("lcd_daemon")
        self.check_note("sound_server")

    def test_readelf_agrees(self):
        if not shutil.which("readelf"):
            self.skipTest("no readelf")
        out = subprocess.run(["readelf", "-n", "--wide", kbtest.binary("kegbot_core")],
                             capture_output=True, text=True).stdout
        block = out[out.index("Displaying notes found in: .note.dlopen"):]
        self.assertIn("FDO", block)
        self.assertIn("0x407c0c0a", block.lower())

    def test_programs_without_http_have_none(self):
        for program in ("kegboard_daemon", "kegbot_master"):
            self.assertEqual(dlopen_notes(kbtest.binary(program)), [], program)


class DlopenRuntimeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = kbtest.TempDir()
        self.dir = self.tmp.__enter__()
        self.addCleanup(self.tmp.__exit__, None, None, None)

    def test_standalone_core_never_maps_libcurl(self):
        core = Core(self.dir)
        self.addCleanup(core.stop)
        # Ready and serving: a kegnet connection is answered.
        core.connect().close()
        self.assertNotIn("libcurl", maps(core.pid))

    def test_server_core_maps_libcurl(self):
        core = Core(self.dir, "--api_url=http://127.0.0.1:%d/api/" % kbtest.free_port())
        self.addCleanup(core.stop)
        self.assertIn("libcurl.so.4", maps(core.pid))


if __name__ == "__main__":
    kbtest.main()
