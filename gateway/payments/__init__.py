"""Payment providers' callbacks (issue 12): one module per provider says how its callback is
signed, parsed and answered (momo.py, zalopay.py, webhook.py for bank transfer and card), next to
the signing side the sandbox and the tests use; sandbox.py is the development stand-in for the
providers' payment pages. Nothing about seats or money is decided here: a verified callback
becomes one call of api.apply_payment_event, and SQL decides."""
