"""IIIF as a campaign source: manifests in, each canvas a page, its image through the Image API.

- ``addresses.py``: which addresses a worker may connect to (never loopback, link-local or private
  ones unless the operator allows a network), checked on every connection, redirects included;
- ``client.py``: the one HTTP client, polite (a per-host limit, backoff on 429 and 5xx honouring
  ``Retry-After``, timeouts) and bounded (response sizes);
- ``presentation.py``: Presentation 2.1 and 3.0 manifests and collections read into canvases,
  bounded in size and depth;
- ``image_api.py``: Image API 2.x and 3.0 ``info.json`` and the request URL for a region at a size
  within the server's ``maxWidth``/``maxHeight``/``maxArea``;
- ``storage.py``: the campaign's storage: canvases resolved into the catalog at listing, and read
  back as a page's image (``<manifest>/<canvas>.jpg``) and linked layout (``<manifest>/<canvas>.xml``).

The catalog side (manifest and canvas rows) is ``pisar/catalog/canvases.py``.
"""
