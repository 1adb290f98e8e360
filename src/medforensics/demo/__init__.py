"""The end-to-end demo behind `make demo`: simulate an archive, train, evaluate, identify, and
run the forgery detector on simulated edits."""
