// goplugin-host loads a plugin with hashicorp's own go-plugin client library (Debian's
// golang-github-hashicorp-go-plugin-dev), the way SPIRE does: magic cookie BundlePublisher, gRPC only, no
// AutoMTLS. It calls SPIRE's Init, Configure and PublishBundle over the connection the library dialed, then
// unloads the plugin (GRPCController/Shutdown) and checks that it exited.
//
// usage: goplugin-host PLUGIN SIGNER_SOCKET BUNDLE_DER
//        goplugin-host devid AGENT_PLUGIN AGENT_HCL SERVER_PLUGIN SERVER_HCL
//        goplugin-host keymanager agent|server PLUGIN HCL
//
// The keymanager form loads a KeyManager plugin (magic cookie KeyManager), configures it, generates a P-256 key,
// lists the keys and signs a SHA-256 digest with it, printing what came back.
//
// The devid form loads the two tpm_devid NodeAttestor plugins (magic cookie NodeAttestor), configures them with
// the HCL files' contents, and relays one attestation between them over their bidi streams, as SPIRE's agent and
// server do: payload, challenge, challenge response, agent attributes.
//
// Messages are encoded by hand (a few protobuf fields) so no generated Go code is needed.
package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"os"
	"os/exec"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func varint(x uint64) []byte {
	var out []byte
	for x >= 0x80 {
		out = append(out, byte(x)|0x80)
		x >>= 7
	}
	return append(out, byte(x))
}

// field encodes a length-delimited protobuf field.
func field(num int, data []byte) []byte {
	out := varint(uint64(num<<3 | 2))
	out = append(out, varint(uint64(len(data)))...)
	return append(out, data...)
}

type bundlePublisher struct{ plugin.NetRPCUnsupportedPlugin }

func (bundlePublisher) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (bundlePublisher) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return conn, nil
}

func call(conn *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp []byte
	err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(rawCodec{}))
	return resp, err
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goplugin-host: "+format+"\n", args...)
	os.Exit(1)
}

// fields decodes the top-level fields of a protobuf message: length-delimited ones as bytes, varints as
// their value's bytes (one byte for a bool).
func fields(msg []byte) (map[int][][]byte, error) {
	out := map[int][][]byte{}
	readVarint := func() (uint64, error) {
		var x uint64
		for shift := uint(0); shift < 64; shift += 7 {
			if len(msg) == 0 {
				return 0, fmt.Errorf("truncated varint")
			}
			b := msg[0]
			msg = msg[1:]
			x |= uint64(b&0x7f) << shift
			if b < 0x80 {
				return x, nil
			}
		}
		return 0, fmt.Errorf("varint too long")
	}
	for len(msg) > 0 {
		tag, err := readVarint()
		if err != nil {
			return nil, err
		}
		num := int(tag >> 3)
		switch tag & 7 {
		case 0:
			v, err := readVarint()
			if err != nil {
				return nil, err
			}
			out[num] = append(out[num], []byte{byte(v)})
		case 2:
			n, err := readVarint()
			if err != nil || uint64(len(msg)) < n {
				return nil, fmt.Errorf("truncated field %d", num)
			}
			out[num] = append(out[num], msg[:n])
			msg = msg[n:]
		default:
			return nil, fmt.Errorf("unexpected wire type %d", tag&7)
		}
	}
	return out, nil
}

func load(path, hclFile string) (*plugin.Client, *grpc.ClientConn) {
	return loadAs(path, hclFile, "NodeAttestor")
}

func loadAs(path, hclFile, cookie string) (*plugin.Client, *grpc.ClientConn) {
	hcl, err := ioutil.ReadFile(hclFile)
	if err != nil {
		fail("%v", err)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: cookie, MagicCookieValue: cookie},
		Plugins:          map[string]plugin.Plugin{"attestor": bundlePublisher{}},
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Info}),
	})
	rpc, err := client.Client()
	if err != nil {
		fail("handshake with %s: %v", path, err)
	}
	raw, err := rpc.Dispense("attestor")
	if err != nil {
		fail("dispense: %v", err)
	}
	conn := raw.(*grpc.ClientConn)
	if _, err := call(conn, "/spire.service.private.init.v1.Init/Init", nil); err != nil {
		fail("Init %s: %v", path, err)
	}
	configure := append(field(1, field(1, []byte("example.org"))), field(2, hcl)...)
	if _, err := call(conn, "/spire.service.common.config.v1.Config/Configure", configure); err != nil {
		fail("Configure %s: %v", path, err)
	}
	return client, conn
}

func stream(conn *grpc.ClientConn, method string) grpc.ClientStream {
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	s, err := conn.NewStream(context.Background(), desc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		fail("%s: %v", method, err)
	}
	return s
}

// exchange sends msg (if any) on s and returns field num of the reply.
func exchange(s grpc.ClientStream, msg []byte, num int, what string) []byte {
	if msg != nil {
		if err := s.SendMsg(&msg); err != nil {
			fail("%s: send: %v", what, err)
		}
	}
	var reply []byte
	if err := s.RecvMsg(&reply); err != nil {
		fail("%s: %v", what, err)
	}
	f, err := fields(reply)
	if err != nil || len(f[num]) != 1 {
		fail("%s: reply without field %d (%v)", what, num, err)
	}
	return f[num][0]
}

func devid(args []string) {
	agentClient, agent := load(args[0], args[1])
	defer agentClient.Kill()
	serverClient, server := load(args[2], args[3])
	defer serverClient.Kill()
	a := stream(agent, "/spire.plugin.agent.nodeattestor.v1.NodeAttestor/AidAttestation")
	payload := exchange(a, nil, 1, "agent payload")
	fmt.Printf("payload: %d bytes\n", len(payload))
	s := stream(server, "/spire.plugin.server.nodeattestor.v1.NodeAttestor/Attest")
	challenge := exchange(s, field(1, payload), 1, "server challenge")
	fmt.Printf("challenge: %d bytes\n", len(challenge))
	response := exchange(a, field(1, challenge), 2, "agent challenge response")
	fmt.Printf("challenge response: %d bytes\n", len(response))
	attrs, err := fields(exchange(s, field(2, response), 2, "server agent attributes"))
	if err != nil || len(attrs[1]) != 1 {
		fail("agent attributes: %v", err)
	}
	fmt.Printf("spiffe_id: %s\n", attrs[1][0])
	for _, sel := range attrs[2] {
		fmt.Printf("selector: %s\n", sel)
	}
	fmt.Printf("can_reattest: %v\n", len(attrs[3]) == 1 && attrs[3][0][0] == 1)
	agentClient.Kill()
	serverClient.Kill()
	fmt.Println("unloaded")
}

func keymanager(side, path, hclFile string) {
	client, conn := loadAs(path, hclFile, "KeyManager")
	defer client.Kill()
	svc := "/spire.plugin." + side + ".keymanager.v1.KeyManager/"
	// GenerateKeyRequest{key_id = "k", key_type = EC_P256 (1)}
	gen, err := call(conn, svc+"GenerateKey", append(field(1, []byte("k")), 0x10, 0x01))
	if err != nil {
		fail("GenerateKey: %v", err)
	}
	pub, err := fields(gen)
	if err != nil || len(pub[1]) != 1 {
		fail("GenerateKey: no public key (%v)", err)
	}
	key, err := fields(pub[1][0])
	if err != nil || len(key[3]) != 1 || len(key[4]) != 1 {
		fail("GenerateKey: public key without pkix_data or fingerprint (%v)", err)
	}
	fmt.Printf("generated: %s, %d bytes of pkix_data, fingerprint %s\n", key[1][0], len(key[3][0]), key[4][0])
	list, err := call(conn, svc+"GetPublicKeys", nil)
	if err != nil {
		fail("GetPublicKeys: %v", err)
	}
	listed, _ := fields(list)
	fmt.Printf("listed: %d key(s)\n", len(listed[1]))
	digest := make([]byte, 32)
	// SignDataRequest{key_id = "k", data = digest, hash_algorithm = SHA256 (5)}
	signed, err := call(conn, svc+"SignData", append(append(field(1, []byte("k")), field(2, digest)...), 0x18, 0x05))
	if err != nil {
		fail("SignData: %v", err)
	}
	sig, err := fields(signed)
	if err != nil || len(sig[1]) != 1 || len(sig[2]) != 1 {
		fail("SignData: no signature or fingerprint (%v)", err)
	}
	fmt.Printf("signed: %d bytes, fingerprint %s\n", len(sig[1][0]), sig[2][0])
	client.Kill()
	fmt.Println("unloaded")
}

func main() {
	if len(os.Args) == 5 && os.Args[1] == "keymanager" {
		keymanager(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	if len(os.Args) == 6 && os.Args[1] == "devid" {
		devid(os.Args[2:])
		return
	}
	if len(os.Args) != 4 {
		fail("usage: goplugin-host PLUGIN SIGNER_SOCKET BUNDLE_DER")
	}
	der, err := ioutil.ReadFile(os.Args[3])
	if err != nil {
		fail("%v", err)
	}
	cmd := exec.Command(os.Args[1])
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "BundlePublisher", MagicCookieValue: "BundlePublisher"},
		Plugins:          map[string]plugin.Plugin{"signer": bundlePublisher{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Debug}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		fail("handshake: %v", err)
	}
	if err := rpc.Ping(); err != nil {
		fail("health: %v", err)
	}
	raw, err := rpc.Dispense("signer")
	if err != nil {
		fail("dispense: %v", err)
	}
	conn := raw.(*grpc.ClientConn)
	init := field(1, []byte("spire.hostservice.common.metrics.v1.Metrics"))
	resp, err := call(conn, "/spire.service.private.init.v1.Init/Init", init)
	if err != nil {
		fail("Init: %v", err)
	}
	fmt.Printf("init: %d bytes of service names\n", len(resp))
	hcl := fmt.Sprintf("socket = %q", os.Args[2])
	configure := append(field(1, field(1, []byte("example.org"))), field(2, []byte(hcl))...)
	if _, err := call(conn, "/spire.service.common.config.v1.Config/Configure", configure); err != nil {
		fail("Configure: %v", err)
	}
	bundle := append(field(1, []byte("example.org")), field(2, field(1, der))...)
	if _, err := call(conn, "/spire.plugin.server.bundlepublisher.v1.BundlePublisher/PublishBundle", field(1, bundle)); err != nil {
		fail("PublishBundle: %v", err)
	}
	fmt.Println("published")
	client.Kill()
	if !client.Exited() {
		fail("plugin still running after Kill")
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		fail("plugin exit: %v", cmd.ProcessState)
	}
	fmt.Println("unloaded: plugin exited 0")
}
