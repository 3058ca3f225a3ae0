"""``quantkit doctor``: what this machine and this install are, and whether each engine runs here;
and the self-test ``make install`` runs on a fresh llama.cpp build before it is stamped."""
