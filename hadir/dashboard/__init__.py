"""The web dashboard, ``hadir dashboard`` (DESIGN.md, "The web dashboard"): what BKPSDM,
reviewers and heads of office open every morning, in Bahasa Indonesia. Server-rendered pages
(``app.py``, ``templates/``) over the same reports and rules as the CLI, read from ClickHouse as
the read-only user (``data.py``); the only writes are events on Kafka (decisions, approvals,
the access log). Maps are SVG drawn on the server (``maps.py``): no map tiles, no front-end
library."""
