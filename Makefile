# The two commands a newcomer needs; both install what they need first.
.PHONY: demo test build release packages

demo:        ## start a local three-member cluster on loopback (Ctrl-C stops it)
	bash scripts/demo.sh

test:        ## run the whole test suite (fmt, clippy, unit and integration tests)
	bash scripts/test.sh

build:
	cargo build --locked

release:
	cargo build --locked --release

packages:    ## build target/debian/*.deb and target/generate-rpm/*.rpm (one glibc-2.28 binary)
	bash scripts/packages.sh
