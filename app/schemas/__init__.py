"""marshmallow schemas at the HTTP edge: requests in, responses out."""
