// Command ingressload is an open-loop load generator for cmd/ingress: it
// posts distinct, validly signed WeChat Pay notifications at a fixed rate,
// measures latency from each request's scheduled send time, and checks that
// the WXPAY stream holds exactly the notifications answered 200.
//
// Subcommands:
//
//	ingressload keys -dir DIR
//	    create a merchant and a public-key-mode fake platform (wxpaytest) and
//	    write the ingress's key files and DIR/ingress.env; an existing DIR is
//	    reused.
//	ingressload gen -n N -out FILE -keys DIR [-ts-ahead 280s]
//	    sign N distinct TRANSACTION.SUCCESS notifications on all cores into
//	    FILE. The ingress accepts a Wechatpay-Timestamp within 5 minutes of
//	    its clock, so every note carries now+ts-ahead and FILE is usable from
//	    gen's start until about ts-ahead+300s later.
//	ingressload run -url URL -rate R -duration D (-corpus FILE | -keys DIR [-gen N]) -nats URL
//	    send open loop: after a linear ramp-up (-ramp-up, 5s), request i of
//	    the measured window is due at its start + i/R whatever happened to
//	    the others; latency counts from that due time. Without -corpus, sign
//	    rate × (duration + ramp-up/2) notifications first, in process, and
//	    start sending as soon as signing is done. At the end, the WXPAY
//	    stream must hold exactly the notifications answered 200. Exit 1 on
//	    any error or a stream mismatch, 3 when p99 misses -max-p99.
//
// See bench/ingress.sh for the whole benchmark and bench/README.md
// ("Ingress") for the figures.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "keys":
		err = cmdKeys(os.Args[2:])
	case "gen":
		err = cmdGen(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	case "floor":
		err = cmdFloor(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "ingressload: unknown subcommand %q\n", os.Args[1])
		usage()
	}
	var ex exitError
	switch {
	case err == nil:
	case errors.As(err, &ex):
		fmt.Fprintln(os.Stderr, "ingressload:", ex.msg)
		os.Exit(ex.code)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "ingressload:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  ingressload keys -dir DIR
  ingressload gen  -n N -out FILE -keys DIR [-ts-ahead 280s] [-workers NCPU]
  ingressload run  -url URL -rate R -duration D (-corpus FILE | -keys DIR [-gen N]) -nats URL [flags]
  ingressload floor [-listen ADDR] [-nats URL]   (the least an ingress must do: read, publish, answer)
run 'ingressload SUBCOMMAND -h' for the flags.
`)
	os.Exit(2)
}

// exitError ends the program with its code: 1 for errors or a stream
// mismatch, 3 for a run without errors whose p99 missed -max-p99.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func cmdKeys(args []string) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the key files and ingress.env")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return exitError{2, "keys: -dir is required"}
	}
	k, err := makeKeys(*dir)
	if err != nil {
		return err
	}
	fmt.Printf("merchant %s, public key %s: %s/%s\n", k.MchID, k.PublicKeyID, *dir, fileEnv)
	return nil
}

// defaultTSAhead puts the timestamps nearly 5 minutes ahead: the corpus is
// then accepted from the moment signing starts until ~9m40s later.
const defaultTSAhead = 280 * time.Second

func cmdGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	n := fs.Int("n", 0, "number of distinct notifications")
	out := fs.String("out", "", "corpus file to write")
	dir := fs.String("keys", "", "keys directory (created when missing)")
	ahead := fs.Duration("ts-ahead", defaultTSAhead, "Wechatpay-Timestamp = signing start + this (at most 5m)")
	tsAt := fs.Int64("ts", 0, "Wechatpay-Timestamp in unix seconds (overrides -ts-ahead)")
	workers := fs.Int("workers", 0, "signing goroutines (default: all cores)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n <= 0 || *out == "" || *dir == "" {
		return exitError{2, "gen: -n, -out and -keys are required"}
	}
	if *ahead > 5*time.Minute {
		return exitError{2, "gen: -ts-ahead over 5m: the corpus would be rejected at first"}
	}
	k, err := makeKeys(*dir)
	if err != nil {
		return err
	}
	ts := time.Now().Add(*ahead)
	if *tsAt != 0 {
		ts = time.Unix(*tsAt, 0)
	}
	fmt.Fprintf(os.Stderr, "signing %d notifications for merchant %s\n", *n, k.MchID)
	c, err := generate(k, *n, *workers, ts, os.Stderr)
	if err != nil {
		return err
	}
	if err := writeCorpus(*out, c); err != nil {
		return err
	}
	from, to := c.Window()
	fmt.Printf("wrote %s: %d notifications, body %d bytes; the ingress accepts them from %s to %s: finish the run by then\n",
		*out, len(c.Notes), len(c.Notes[0].Body), from.Format(time.TimeOnly), to.Format(time.TimeOnly))
	return nil
}
