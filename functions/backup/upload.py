"""A multipart S3 upload fed from a stream, in constant memory."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from shared.logs import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


class StreamingUpload:
    """A multipart upload fed in order, one part uploading while the next one fills.

    Memory peaks at about three parts (one filling, its joined copy, one in flight),
    whatever the stream's length. Parts carry a CRC32 checksum that S3 verifies. The
    upload is completed with `If-None-Match: *`: it never replaces an existing object.
    """

    def __init__(self, s3: S3Client, bucket: str, key: str, part_size: int) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self.part_size = part_size
        self.upload_id = s3.create_multipart_upload(
            Bucket=bucket,
            Key=key,
            ContentType="application/octet-stream",
            ChecksumAlgorithm="CRC32",
        )["UploadId"]
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._parts: list[CompletedPartTypeDef] = []
        self._next_number = 1
        self._in_flight: Future[CompletedPartTypeDef] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-upload")
        self._completed = False

    def write(self, data: bytes) -> None:
        """Buffer `data`; a full part goes out once the previous part has finished."""
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self.part_size:
            self._send()

    def complete(self) -> None:
        """Send the last part and complete the upload, unless the key already exists."""
        if self._chunks or self._next_number == 1:
            self._send()
        self._collect()
        self._executor.shutdown()
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._parts},
            IfNoneMatch="*",
        )
        self._completed = True

    def abort(self) -> None:
        """Abort unless completed; never raises (the caller is already handling an error).

        The part in flight is waited for first: S3 may keep a part whose upload was still
        running when the abort arrived.
        """
        if self._in_flight is not None:
            self._in_flight.exception()
        self._executor.shutdown()
        if self._completed:
            return
        try:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self.upload_id
            )
        except Exception:
            logger.exception("could not abort the multipart upload", extra={"key": self._key})

    def _send(self) -> None:
        part = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        self._collect()
        self._in_flight = self._executor.submit(self._upload_part, self._next_number, part)
        self._next_number += 1

    def _collect(self) -> None:
        if self._in_flight is not None:
            self._parts.append(self._in_flight.result())
            self._in_flight = None

    def _upload_part(self, number: int, body: bytes) -> CompletedPartTypeDef:
        response = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part
