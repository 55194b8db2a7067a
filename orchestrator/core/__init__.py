"""Ripple's pure logic: job and worker lifecycles, health, the pool plan, the autoscaling policy and the
queue's dispatcher. Nothing here imports ray, redis, fastapi or starlette, nor reads the clock: time is
passed in, side effects go through the narrow interfaces the callers hand over."""
