"""The browser gateway (``streamrec gateway``): live recommendations and metrics for
browsers over Server-Sent Events, events in over HTTP, the shopper and monitoring pages.

``hub`` fans one Kafka consumer out to every open stream, ``app`` holds the routes,
``catalogue`` the items the pages show, ``server`` runs it on uvicorn, ``bench``
measures it (``streamrec bench gateway``).
"""
