"""The S3 API: path-style S3 requests served over the same namespace as the qfs HTTP API."""
