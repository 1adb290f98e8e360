"""Small shared utilities every layer may use: hashing, JSON and atomic writes, the CPU
thread policy, sharding of file lists. Nothing here imports another medforensics package
except ``errors``."""
