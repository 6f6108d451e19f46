/* libFuzzer harness for the firmware core: `make -C firmware fuzz-run FUZZ_SECONDS=30`.
 *
 * The input is a script of operations on one device: raw host bytes, well-formed frames built
 * from fuzz bytes (so the state machine is reached past the CRC), time steps, samples and
 * contact changes. After every operation the harness checks, independently of the core's own
 * bookkeeping, that the output stage is never asked for more than the hard caps, never without
 * contact, never while an emergency stop is latched, never past the watchdog and never past
 * the longest burst. A violated check aborts, and libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmf.h"

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                 \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

static uint32_t tx_used;
static uint32_t tx_room;

static void sink_write(void *ctx, const uint8_t *data, uint16_t len)
{
    (void)ctx;
    (void)data;
    CHECK(len <= tx_room - tx_used); /* never more than tx_free() promised */
    tx_used += len;
}

static uint16_t sink_free(void *ctx)
{
    (void)ctx;
    return (uint16_t)(tx_room - tx_used);
}

static const char *const roles[] = {"VM", "VL", "C2"};
static const vmf_device_config cfg = {1, 0, 0, 2000, 24414, 10, 3, 8, "FUZZ", roles};

/* A frame with a good CRC around `body`, COBS-encoded with its delimiter. */
static uint16_t frame(uint8_t type, const uint8_t *body, uint8_t len, uint8_t *out)
{
    uint8_t raw[64];
    uint16_t crc, n = 0, i, code_at = 0, w = 1;
    uint8_t code = 1;
    raw[n++] = 1;
    raw[n++] = type;
    raw[n++] = 0;
    raw[n++] = 0;
    if (len) {
        memcpy(raw + n, body, len);
    }
    n = (uint16_t)(n + len);
    crc = vmf_crc16(raw, n);
    raw[n++] = (uint8_t)crc;
    raw[n++] = (uint8_t)(crc >> 8);
    for (i = 0; i < n; i++) {
        if (raw[i] == 0) {
            out[code_at] = code;
            code_at = w++;
            code = 1;
        } else {
            out[w++] = raw[i];
            code++;
        }
    }
    out[code_at] = code;
    out[w++] = 0;
    return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static vmf_device dev;
    vmf_io io = {sink_write, sink_free, NULL};
    uint32_t now = 1000, last_host = 0, frames_ok = 0;
    uint8_t contact = 0x7, have_host = 0, latched = 0;
    size_t pos = 0;
    CHECK(vmf_init(&dev, &cfg, io, now) == 0);
    tx_room = 4096;
    while (pos < size) {
        uint8_t op = data[pos++];
        uint8_t arg = pos < size ? data[pos] : 0;
        uint8_t buf[96];
        uint16_t n = 0;
        tx_used = 0;
        tx_room = (op & 0x80) ? 40u : 4096u; /* sometimes the UART is nearly full */
        switch (op & 0x7) {
        case 0: /* raw bytes from the host */
            if (pos >= size) {
                break;
            }
            n = (uint16_t)(arg % 48);
            pos++;
            if (n > size - pos) {
                n = (uint16_t)(size - pos);
            }
            vmf_receive(&dev, data + pos, n, now);
            pos += n;
            n = 0;
            break;
        case 1: /* a well-formed StimCommand with fuzzed fields */
            if (pos + 17 <= size) {
                n = frame(0x20, data + pos, 17, buf);
                pos += 17;
            }
            break;
        case 2: /* a heartbeat */
            n = frame(0x30, (const uint8_t *)"\x01\x02\x03\x04", 4, buf);
            break;
        case 3: /* emergency stop or clear */
            n = frame(arg & 1 ? 0x40 : 0x42, NULL, 0, buf);
            pos++;
            break;
        case 4: /* time passes: up to 1.3 s */
            now += (uint32_t)arg * 5u;
            pos++;
            break;
        case 5: { /* a sample set */
            int16_t v[3] = {(int16_t)(arg << 8 | arg), (int16_t)-arg, (int16_t)(arg * 300)};
            vmf_sample_push(&dev, v);
            pos++;
            break;
        }
        case 6: /* contact */
            contact = arg & 7;
            vmf_set_contact(&dev, 0, contact & 1);
            vmf_set_contact(&dev, 1, (contact >> 1) & 1);
            vmf_set_contact(&dev, 2, (contact >> 2) & 1);
            pos++;
            break;
        default:
            break;
        }
        if (n) {
            vmf_receive(&dev, buf, n, now);
        }
        if (dev.stats.host_frames_ok != frames_ok) { /* some valid host frame arrived now */
            frames_ok = dev.stats.host_frames_ok;
            last_host = now;
            have_host = 1;
        }
        /* Latched: the last estop/clear the core accepted decides, as the harness sees it. */
        if ((op & 0x7) == 3 && n) {
            latched = dev.estop_latched;
        }
        vmf_poll(&dev, now);
        {
            vmf_stim_output out = vmf_stim_output_now(&dev);
            if (out.active) {
                /* docs/protocol.md's numbers, not the core's macros: a wrong cap is caught */
                CHECK(out.amplitude_dma <= 600);
                CHECK(out.pulse_width_us >= 1 && out.pulse_width_us <= 400);
                CHECK(out.frequency_hz >= 1 && out.frequency_hz <= 100);
                CHECK(out.channel < cfg.n_channels);
                CHECK((contact >> out.channel) & 1);
                CHECK(!latched && !dev.estop_latched);
                CHECK(have_host && now - last_host <= 250);
                CHECK(now - dev.burst.start_ms <= 10000);
                CHECK(out.amplitude_dma <= dev.burst.amplitude_dma);
            }
            if (dev.state == VMF_STOPPED_ESTOP) {
                CHECK(!out.active);
            }
        }
    }
    return 0;
}
