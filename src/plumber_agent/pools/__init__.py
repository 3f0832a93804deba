"""Per-node addresses from pools (docs/address-pools.md): one template gives every node it
selects its own address on an interface. `pool` is the pure part (which addresses a pool hands
out, which one a node takes, the claim's name); claiming them is done with AddressClaim objects,
one per address, whose create is the lock.
"""
