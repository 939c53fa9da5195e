"""The drivers and services of a real node, by audience: service/ (murmur agent), trust/
(keys, invites, signed requests and records), cli/ (murmur), dev/ (demo, loopback meshes)."""
