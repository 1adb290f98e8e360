"""A DICOMweb client for the PACS: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

A thin layer over ``dicomweb-client``: authentication (HTTP basic or a bearer token),
TLS options, a time-out, paged searches, and every failure turned into one of the errors
of :mod:`medforensics.pacs.errors` with a message saying what to check:

================================  ===========================================================
no answer (refused, DNS, time-out) :class:`PacsUnreachableError`
HTTP 401 / 403                     :class:`PacsAuthError`
other HTTP 4xx                     :class:`PacsRequestError` (404 on retrieve: the instance
                                   is gone)
HTTP 5xx                           :class:`PacsServerError`
================================  ===========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from medforensics.errors import ConfigError
from medforensics.pacs.common import require
from medforensics.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsRequestError,
    PacsServerError,
    PacsUnreachableError,
)

__all__ = ["InstanceRef", "PacsClient", "StoreOutcome"]

log = logging.getLogger(__name__)

#: attributes asked for in every instance search (QIDO ``includefield``)
_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
           "Modality", "Rows", "Columns", "NumberOfFrames", "InstanceNumber")
_TAGS = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E",
         "SOPInstanceUID": "00080018", "SOPClassUID": "00080016", "Modality": "00080060",
         "Rows": "00280010", "Columns": "00280011", "NumberOfFrames": "00280008"}


@dataclass(frozen=True)
class InstanceRef:
    """One instance found by a search.

    Attributes:
        study, series, sop: its Study, Series and SOP Instance UIDs.
        sop_class: its SOP Class UID (``""`` when the server did not say).
        modality: the series' modality (``""`` when not returned).
        has_pixels: whether the search result says it is an image (Rows present); ``None``
            when the server returned no Rows attribute.
    """

    study: str
    series: str
    sop: str
    sop_class: str = ""
    modality: str = ""
    has_pixels: bool | None = None


@dataclass(frozen=True)
class StoreOutcome:
    """What STOW-RS answered: the SOP Instance UIDs stored and those refused (with the
    server's failure reason code)."""

    stored: tuple[str, ...]
    failed: tuple[tuple[str, int | None], ...]


def _value(item: Mapping[str, Any], keyword: str) -> str:
    vals = (item.get(_TAGS[keyword]) or {}).get("Value") or []
    return str(vals[0]) if vals else ""


class PacsClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb root (e.g.
    ``https://pacs.example.org/dicom-web``).

    Args:
        url: the DICOMweb root.
        user, password: HTTP basic authentication (both or neither).
        token: a bearer token (``Authorization: Bearer ...``); not with ``user``.
        ca_bundle: a CA certificate file for TLS (default: the system's).
        insecure: skip TLS certificate checks (only for test servers).
        timeout: seconds per request (connect and read).
        retries: attempts for 408 / 429 / 503 / 504 answers (``dicomweb-client``'s
            exponential back-off); 1 = no retry.

    Raises:
        ConfigError: both basic credentials and a token, or only one of user / password.
        MissingDicomExtraError: dicomweb-client is not installed.
    """

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None,
                 token: str | None = None, ca_bundle: str | None = None,
                 insecure: bool = False, timeout: float = 30.0, retries: int = 3) -> None:
        if (user is None) != (password is None):
            raise ConfigError("give both a user and a password for HTTP basic "
                              "authentication, or neither")
        if token and user:
            raise ConfigError("give either a bearer token or a user and password, not both")
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"{url!r}: the DICOMweb URL must start with http:// or https://")
        require("requests")
        api = require("dicomweb_client.api")
        import requests

        self.url = url.rstrip("/")
        session = requests.Session()
        if user is not None:
            session.auth = (user, password or "")
        if ca_bundle:
            session.verify = ca_bundle
        elif insecure:
            session.verify = False
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = api.DICOMwebClient(self.url, session=session, headers=headers,
                                          timeout=timeout)
        self._client.set_http_retry_params(retry=retries > 1, max_attempts=max(1, retries),
                                           wait_exponential_multiplier=250)

    # ------------------------------------------------------------------ errors
    def _error(self, exc: Exception, what: str) -> PacsError:
        """The medforensics error for a ``requests`` failure of ``what``."""
        import requests

        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = int(exc.response.status_code)
            url = str(exc.response.url or self.url)
            body = (exc.response.text or "").strip().replace("\n", " ")[:200]
            detail = f"{what}: HTTP {status} {exc.response.reason or ''}".rstrip() + \
                f" from {url}" + (f" ({body})" if body else "")
            if status in (401, 403):
                return PacsAuthError(detail + ": check --user/--password or --token",
                                     url=url, status=status)
            if 400 <= status < 500:
                return PacsRequestError(detail, url=url, status=status)
            return PacsServerError(detail + ": the server failed; try again later or "
                                   "ask its administrator", url=url, status=status)
        if isinstance(exc, requests.exceptions.SSLError):
            return PacsUnreachableError(f"{what}: TLS failed with {self.url} ({exc}); check "
                                        "--ca-bundle", url=self.url)
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return PacsUnreachableError(
                f"{what}: no answer from {self.url} ({type(exc).__name__}); check the URL, "
                "that the server runs and that this machine may reach it", url=self.url)
        return PacsError(f"{what}: {type(exc).__name__}: {exc}", url=self.url)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        import requests

        try:
            return fn(*args, **kw)
        except requests.RequestException as exc:
            raise self._error(exc, what) from None
        except ValueError as exc:  # a malformed answer (not JSON, not multipart DICOM)
            raise PacsError(f"{what}: unreadable answer from {self.url}: {exc}",
                            url=self.url) from None

    # ------------------------------------------------------------------ QIDO
    def search(self, *, study: str | None = None, series: str | None = None,
               filters: Mapping[str, str] | None = None, page: int = 500
               ) -> Iterator[InstanceRef]:
        """Instances matching the query, page by page (QIDO-RS ``limit`` / ``offset``).

        Args:
            study: restrict to one study.
            series: restrict to one series (needs ``study``).
            filters: further QIDO matching keys by DICOM keyword, e.g.
                ``{"Modality": "DX", "StudyDate": "20240101-20240131"}``.
            page: results per request.

        Yields:
            :class:`InstanceRef` per instance, in the server's order.

        Raises:
            PacsError subclasses (see the module docs).
        """
        offset = 0
        while True:
            items = self._call(
                "search (QIDO-RS)", self._client.search_for_instances,
                study_instance_uid=study, series_instance_uid=series, limit=page,
                offset=offset, fields=list(_FIELDS), search_filters=dict(filters or {}))
            for it in items:
                rows = _value(it, "Rows")
                yield InstanceRef(
                    study=_value(it, "StudyInstanceUID") or (study or ""),
                    series=_value(it, "SeriesInstanceUID") or (series or ""),
                    sop=_value(it, "SOPInstanceUID"),
                    sop_class=_value(it, "SOPClassUID"),
                    modality=_value(it, "Modality"),
                    has_pixels=(bool(rows) if _TAGS["Rows"] in it or rows else None),
                )
            if len(items) < page:
                return
            offset += len(items)

    # ------------------------------------------------------------------ WADO
    def retrieve(self, ref: InstanceRef) -> Dataset:
        """The instance as a data set (WADO-RS, the server's transfer syntax).

        Raises:
            PacsRequestError: 404 when it is gone, other 4xx; PacsError subclasses.
        """
        return self._call(f"retrieve {ref.sop} (WADO-RS)", self._client.retrieve_instance,
                          ref.study, ref.series, ref.sop)

    # ------------------------------------------------------------------ STOW
    def store(self, datasets: Sequence[Dataset]) -> StoreOutcome:
        """Store data sets (STOW-RS, one request per study among them).

        Returns:
            :class:`StoreOutcome`; a partial failure (HTTP 202) lists the refused ones.

        Raises:
            PacsError subclasses (a complete failure: HTTP 409 is a PacsRequestError).
        """
        by_study: dict[str, list[Dataset]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        stored: list[str] = []
        failed: list[tuple[str, int | None]] = []
        for study, group in by_study.items():
            resp = self._call(f"store {len(group)} object(s) of study {study} (STOW-RS)",
                              self._client.store_instances, group, study_instance_uid=study)
            stored += [str(i.ReferencedSOPInstanceUID)
                       for i in (resp.get("ReferencedSOPSequence") or [])]
            failed += [(str(i.get("ReferencedSOPInstanceUID", "")),
                        int(i.FailureReason) if "FailureReason" in i else None)
                       for i in (resp.get("FailedSOPSequence") or [])]
        return StoreOutcome(tuple(stored), tuple(failed))
