"""Software environments: specs, locks (content addresses), image builds, version skew.

Cloud-neutral and pure where it can be: `spec` validates and normalises what users give,
`lock` turns a spec into a lock text and its hash, `build` is the one entry point of an
image build (run on a builder instance in the account, never on the control plane).
"""
