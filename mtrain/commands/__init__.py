"""The glue of one CLI command each: check the request, call the layers below, print."""
