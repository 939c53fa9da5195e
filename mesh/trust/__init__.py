"""Identity and trust: node keys, the cluster and its invites, operator-signed requests and records."""
