"""Operating an instance: the local Ray head and embedded Redis, deploying onto a cluster, and doctor."""
