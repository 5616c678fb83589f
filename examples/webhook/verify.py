"""Verify an event forwarded by wxpay-notify's forward handler (Python 3).

Usage as a script (for the project's own test): verify.py SECRET TIMESTAMP SIGNATURE < body
"""
import hashlib
import hmac
import sys
import time


def verify(secret: bytes, timestamp: str, signature: str, raw_body: bytes, tolerance: int = 300) -> None:
    """Raise ValueError unless the signature is valid and the timestamp fresh.

    Verify the raw body before parsing it; use the Idempotency-Key header as
    the unique key of what you do with the event.
    """
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        raise ValueError("timestamp missing or more than %d s off" % tolerance)
    mac = hmac.new(secret, timestamp.encode() + b"." + raw_body, hashlib.sha256)
    if not hmac.compare_digest("v1=" + mac.hexdigest(), signature):
        raise ValueError("bad signature")


if __name__ == "__main__":
    try:
        verify(sys.argv[1].encode(), sys.argv[2], sys.argv[3], sys.stdin.buffer.read())
    except ValueError as e:
        print(e)
        sys.exit(1)
    print("ok")
