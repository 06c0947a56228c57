"""The downstream-app kit: typed messages of the hub's change feeds, and an example app.

``feeds`` holds a pydantic model per feed message (the JSON Schemas in ``schemas/`` are
generated from them), ``contract`` builds those files and the AsyncAPI document, ``clinic``
the rules of the example township clinic notifier, and ``notifier`` that app on faststream.
An app of its own imports ``adapters.apps.feeds`` and subscribes with the models.
"""
