from rostersync.adapters.throttle import RateLimiter


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_bursts_then_holds_the_average_rate():
    t = FakeTime()
    limiter = RateLimiter(per_minute=600, burst=10, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        assert limiter.acquire() == 0  # the burst
    for _ in range(100):
        limiter.acquire()
    # 100 more calls at 10 a second take 10 seconds.
    assert abs(t.now - 10.0) < 1e-6


def test_a_batch_takes_room_for_each_call_in_it():
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, burst=5, clock=t.clock, sleep=t.sleep)
    limiter.acquire(5)
    assert limiter.acquire(3) == 3.0


def test_idle_time_refills_up_to_the_burst_only():
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, burst=2, clock=t.clock, sleep=t.sleep)
    t.now = 1000
    assert limiter.acquire(2) == 0
    assert limiter.acquire(1) == 1.0
