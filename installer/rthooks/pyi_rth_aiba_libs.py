"""PyInstaller runtime hook: let ``ctypes.util.find_library`` see the libraries inside the bundle.

On Linux, ``find_library`` asks ldconfig/gcc and never looks in the bundle, so sounddevice reports
"PortAudio library not found" on a machine without libportaudio2 even though the bundle carries
``libportaudio.so.2``. This hook answers from the bundle first and falls back to the system.
"""

import ctypes.util
import glob
import os
import sys

_bundle = getattr(sys, "_MEIPASS", None)
if _bundle and sys.platform.startswith("linux"):
    _system_find_library = ctypes.util.find_library

    def _find_library(name):
        hits = sorted(glob.glob(os.path.join(_bundle, f"lib{name}.so*")), key=len)
        return hits[0] if hits else _system_find_library(name)

    ctypes.util.find_library = _find_library
