socket = "/run/s.sock"
urls = ["http://10.0.0.2:8181/sign"]
frequency = "5m"
format = "spiffe"
