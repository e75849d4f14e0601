"""Cloud Storage adapter: reads a OneRoster CSV bundle's bytes (app/oneroster_bundles.py handles them)."""

from __future__ import annotations

from rostersync.domain.ports import StorageError


class StorageReader:
    """Reads an object's bytes through google-api-python-client's bundled storage v1 document."""

    def __init__(self, endpoint: str, credentials=None):
        from googleapiclient.discovery import build

        if credentials is None:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        self._service = build(
            "storage",
            "v1",
            credentials=credentials,
            # The JSON API lives under storage/v1/ of the host (rootUrl + servicePath in the document).
            client_options={"api_endpoint": endpoint.rstrip("/") + "/storage/v1/"},
            static_discovery=True,
            cache_discovery=False,
            num_retries=0,
        )

    def read(self, bucket: str, name: str, generation: str | None = None) -> bytes:
        from googleapiclient.errors import HttpError

        try:
            kwargs = {"bucket": bucket, "object": name}
            if generation:
                kwargs["generation"] = generation
            return self._service.objects().get_media(**kwargs).execute()
        except HttpError as exc:
            raise StorageError(f"Cloud Storage answered {exc.resp.status} for {name}", int(exc.resp.status)) from exc
