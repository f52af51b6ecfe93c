"""A year of every channel's deliveries, as Customer.io bodies: for the dashboard's and views' timings."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

DAY0 = 1704067200  # 2024-01-01T00:00:00Z
# What each channel reports after `sent` (SPEC §8), with how often.
FOLLOW = {
    "email": (
        ("delivered", 0.95), ("opened", 0.45), ("clicked", 0.08), ("bounced", 0.03), ("converted", 0.01),
    ),
    "push": (("delivered", 0.9), ("opened", 0.2), ("clicked", 0.05), ("failed", 0.05), ("converted", 0.01)),
    "sms": (("delivered", 0.97), ("clicked", 0.06), ("replied", 0.02), ("undeliverable", 0.02)),
    "in_app": (("opened", 0.6), ("clicked", 0.1), ("converted", 0.02)),
    "whatsapp": (("delivered", 0.96), ("opened", 0.7), ("clicked", 0.1), ("replied", 0.05), ("failed", 0.02)),
    "webhook": (("clicked", 0.01), ("failed", 0.03)),
    "slack": (("clicked", 0.05), ("failed", 0.01)),
}  # fmt: skip
CHANNELS = tuple(FOLLOW)


def year_bodies(per_day: int, days: int = 365, seed: int = 1) -> Iterator[bytes]:
    """`per_day` deliveries a day, the channels in turn, 20 campaigns; each delivery's events."""
    rng = random.Random(seed)
    n = 0
    for day in range(days):
        for k in range(per_day):
            channel = CHANNELS[k % len(CHANNELS)]
            delivery = f"y{day:03d}-{k:05d}"
            at = DAY0 + day * 86400 + rng.randrange(86000)
            ids = {"campaign_id": 1 + k % 20, "action_id": 100 + k % 20, "customer_id": f"u{k}"}
            for metric, odds in (("sent", 1.0), *FOLLOW[channel]):
                if rng.random() < odds:
                    n += 1
                    event = {
                        "event_id": f"Y{n:010d}",
                        "object_type": channel,
                        "metric": metric,
                        "timestamp": at + 60,
                        "data": {**ids, "delivery_id": delivery, "recipient": "someone@example.com"},
                    }
                    yield json.dumps(event).encode()
