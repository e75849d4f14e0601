"""Secret Manager adapter (google-api-python-client's bundled secretmanager v1 discovery document).

The one-time consent command adds the administrator's push-notification grant as a version; the
renewal function reads the latest version when it runs, so a new consent needs no redeploy and
the function deploys before any version exists (Cloud Run refuses a secret environment variable
without one). The other secrets (the Clever token) reach the functions as environment variables.
"""

from __future__ import annotations

import base64
from urllib.parse import urlparse

from rostersync.config import DEFAULT_SECRET_MANAGER_API_ENDPOINT


class SecretMissingError(LookupError):
    """The secret has no version yet (or does not exist)."""


class SecretStore:
    def __init__(self, endpoint: str = DEFAULT_SECRET_MANAGER_API_ENDPOINT):
        import google.auth
        from google.auth.credentials import AnonymousCredentials
        from googleapiclient.discovery import build

        local = (urlparse(endpoint).hostname or "").startswith("127.")
        if local:
            credentials = AnonymousCredentials()
        else:
            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        self._service = build(
            "secretmanager",
            "v1",
            credentials=credentials,
            client_options={"api_endpoint": endpoint},
            static_discovery=True,
            cache_discovery=False,
        )

    def add_version(self, secret_name: str, value: bytes) -> str:
        """Adds a version to projects/P/secrets/S (terraform made the secret); its resource name."""
        body = {"payload": {"data": base64.b64encode(value).decode()}}
        answer = self._service.projects().secrets().addVersion(parent=secret_name, body=body).execute()
        return answer.get("name", "")

    def access_latest(self, secret_name: str) -> bytes:
        from googleapiclient.errors import HttpError

        request = self._service.projects().secrets().versions().access(name=f"{secret_name}/versions/latest")
        try:
            answer = request.execute(num_retries=2)
        except HttpError as exc:
            if exc.resp.status == 404:
                raise SecretMissingError(f"{secret_name} has no version") from None
            raise
        return base64.b64decode(answer["payload"]["data"])
