"""Kill a child process of this test with SIGSEGV as soon as it appears: what a faulting llama.cpp
build (ggml's AMX kernels on AMX Xeons) does to the process that runs it."""

import os
import signal
import threading
import time

import psutil


class SegfaultChild:
    """``with SegfaultChild("llama-quantize"):`` - the first descendant whose command line holds
    ``marker`` gets SIGSEGV; ``.killed`` says whether one did."""

    def __init__(self, marker: str, timeout: float = 120):
        self.marker, self.timeout, self.killed = marker, timeout, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me, deadline = psutil.Process(os.getpid()), time.time() + self.timeout
        while not self._stop.is_set() and time.time() < deadline:
            for child in me.children(recursive=True):
                try:
                    if any(self.marker in part for part in child.cmdline()):
                        child.send_signal(signal.SIGSEGV)
                        self.killed = child.pid
                        return
                except psutil.Error:
                    continue
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
