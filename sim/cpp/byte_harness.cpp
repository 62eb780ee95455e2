// Standalone Verilator driver of a byte-stream component (rx / tx amaranth.lib.stream, 8-bit payload).
//
// Bytes read from stdin are offered on rx (one per cycle while rx.ready), tx is always ready and its
// bytes go to stdout. No Python per cycle: the host talks to this process through pipes
// (driver.transport.VerilatorTransport). Ports (Amaranth's Verilog names): clk, rx__valid,
// rx__ready, rx__payload, tx__valid, tx__ready, tx__payload (Verilator spells "__" as "___05F" in
// C++), and with -DHAS_BUSY a `busy` output (1 while
// the component has work in flight: the harness then never waits for the host while it is busy).
// There is no rst port: sim.byte_model.PowerOnReset resets the component in its first cycles, and the
// harness idles WARMUP_CYCLES cycles before it offers the first byte.
//
// The simulation runs freely: with its input buffer empty it reads stdin every READ_EVERY cycles, and
// after IDLE_POLL quiet cycles (no byte in or out) it waits up to 1 ms for input on each read, so a
// long computation never waits for the host. On stdin EOF it
// runs until tx has been silent for DRAIN_CYCLES, then prints "cycles <n>" to stderr and exits.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "Vtop.h"
#include "verilated.h"

static const uint64_t IDLE_POLL = 4096;  // quiet cycles before the harness waits for input
static const uint64_t READ_EVERY = 256;  // cycles between reads of stdin while its buffer is empty
static const uint64_t DRAIN_CYCLES = 2000000;
static const int WARMUP_CYCLES = 16;  // > sim.byte_model.POR_CYCLES

static void flush_out(std::vector<uint8_t>& out) {
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = write(STDOUT_FILENO, out.data() + done, out.size() - done);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            std::exit(3);  // the host went away
        }
        done += static_cast<size_t>(n);
    }
    out.clear();
}

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(ctx.get());
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);

    std::deque<uint8_t> in;
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    bool eof = false;
    uint64_t cycles = 0, quiet = 0;

    top->rx___05Fvalid = 0;
    top->tx___05Fready = 0;
    for (int i = 0; i < WARMUP_CYCLES; i++) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }

    while (true) {
        if (in.empty() && !eof && cycles % READ_EVERY == 0) {
#ifdef HAS_BUSY
            bool idle = quiet >= IDLE_POLL && !top->busy;
#else
            bool idle = quiet >= IDLE_POLL;
#endif
            if (idle) {  // nothing in, nothing out, nothing running: wait a little for the host
                flush_out(out);
                struct pollfd p = {STDIN_FILENO, POLLIN, 0};
                poll(&p, 1, 1);
            }
            ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) in.insert(in.end(), buf, buf + n);
            else if (n == 0) eof = true;
        }
        top->rx___05Fvalid = in.empty() ? 0 : 1;
        top->rx___05Fpayload = in.empty() ? 0 : in.front();
        top->tx___05Fready = 1;
        top->clk = 0;
        top->eval();
        bool rx_fire = top->rx___05Fvalid && top->rx___05Fready;
        bool tx_fire = top->tx___05Fvalid && top->tx___05Fready;
        uint8_t tx_byte = static_cast<uint8_t>(top->tx___05Fpayload);
        top->clk = 1;
        top->eval();
        cycles++;
        if (rx_fire) in.pop_front();
        if (tx_fire) {
            out.push_back(tx_byte);
            quiet = 0;
        } else {
            quiet++;
        }
        if (rx_fire) quiet = 0;
        if (out.size() >= 4096 || (!out.empty() && !tx_fire)) flush_out(out);
#ifdef HAS_BUSY
        if (eof && in.empty() && !top->busy && quiet >= 16) break;
#endif
        if (eof && in.empty() && quiet >= DRAIN_CYCLES) break;
    }
    flush_out(out);
    top->final();
    std::fprintf(stderr, "cycles %llu\n", static_cast<unsigned long long>(cycles));
    return 0;
}
