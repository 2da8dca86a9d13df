"""The phone edge, ``hadir gateway``: the only way phones reach Hadir (DESIGN.md, "The phone
edge"). An ASGI app (``app.py``) on uvicorn (``server.py``): every ``/v1`` request is signed by
a registered device key (``processors/devices.py``), every body is parsed into one bounded model
(``bodies.py``), and a check-in is answered 202 only once Kafka has acknowledged it
(``publisher.py``)."""
