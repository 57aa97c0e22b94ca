"""What a device and its CA both need to know of the protocols between them, pure and without
transport: the EST, SCEP and CMS codecs, the certificate request, the Retry-After header, and
the table of the ways an enrollment with a CA fails."""
