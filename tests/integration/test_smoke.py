from tests.support.gateway import simple_config
from tests.support.net import request


def test_proxies_a_get(upstream, start_gateway):
    gateway = start_gateway(simple_config(upstream.url))
    response = request(gateway.port, "GET", "/hello?x=1")
    assert response.status == 200
    assert response.json()["path"] == "/hello"
