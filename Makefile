# Thin aliases for tasks.py (which needs only python3).
.PHONY: help demo test test-all bench reliability setup lock
help: ; @python3 tasks.py help
demo: ; python3 tasks.py demo
test: ; python3 tasks.py test
test-all: ; python3 tasks.py test-all
bench: ; python3 tasks.py bench
reliability: ; python3 tasks.py reliability
setup: ; python3 tasks.py setup
lock: ; python3 tasks.py lock
