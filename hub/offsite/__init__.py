"""Off-site copies (issue 20): upload providers (S3, SFTP, a directory) and the upload runner."""
