// gojwt-verify: verifies a one-layer bundle token the way the Go original's verifier does (golang-jwt's
// ParseWithClaims into a struct holding `spiffetb` and the registered claims, RS256 with the given public key)
// and prints the bundle. Built from Debian's golang-jwt package, offline, by ci/test.sh; used by
// testbed/tests/e2e_go_verifier.rs to check that claims the original does not know (ours: `spiffetd`) are ignored.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/golang-jwt/jwt"
)

// The original's claims type, field for field.
type SPIFFETrustBundleClaims struct {
	SPIFFETrustBundle string `json:"spiffetb"`
	jwt.RegisteredClaims
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gojwt-verify PUBLIC-KEY.pem < token")
		os.Exit(2)
	}
	pemBytes, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	claims := &SPIFFETrustBundleClaims{}
	token, err := jwt.ParseWithClaims(strings.TrimSpace(string(raw)), claims, func(t *jwt.Token) (interface{}, error) {
		if _, ok := t.Method.(*jwt.SigningMethodRSA); !ok {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return key, nil
	})
	if err != nil || !token.Valid {
		fmt.Fprintln(os.Stderr, "token refused:", err)
		os.Exit(1)
	}
	fmt.Print(claims.SPIFFETrustBundle)
}
