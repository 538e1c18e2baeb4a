"""Response headers every answer of the edge carries, in one place: the hardening middleware adds
them, and the last-resort 500 (answered outside every middleware) adds them itself."""

# Set on every response that has not set them itself.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Answers are per caller and change all the time; nothing in between should keep them.
    "Cache-Control": "no-store",
}
CSP = "Content-Security-Policy"
# The API answers JSON only: nothing in it may load, run or be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The edge's own pages (edge.pages): everything from the edge itself, no inline script or style.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
