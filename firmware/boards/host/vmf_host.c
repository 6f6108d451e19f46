/* The core on a PC, as a shared library for the tests (ctypes) and as the fuzz target's board.
 *
 * One device, its "UART" a flat buffer the caller drains with vmfh_take(). Time and samples are
 * whatever the caller passes, so tests step them exactly.
 */
#include <string.h>

#include "vmf.h"

#define HOST_TX_SIZE 65536u

static vmf_device dev;
static vmf_device_config cfg;
static char serial[16];
static char roles[VMF_MAX_CHANNELS][16];
static const char *role_ptrs[VMF_MAX_CHANNELS];
static uint8_t tx[HOST_TX_SIZE];
static uint32_t tx_len;
static uint32_t tx_limit = HOST_TX_SIZE; /* tests shrink it to model a slow UART */

static void host_write(void *ctx, const uint8_t *data, uint16_t len)
{
    (void)ctx;
    memcpy(tx + tx_len, data, len);
    tx_len += len;
}

static uint16_t host_tx_free(void *ctx)
{
    uint32_t free_bytes = tx_limit > tx_len ? tx_limit - tx_len : 0;
    (void)ctx;
    return (uint16_t)(free_bytes > 0xFFFFu ? 0xFFFFu : free_bytes);
}

/* roles_csv: "VM,VL". Returns 0, or -1 if the configuration does not fit the build. */
int vmfh_init(uint32_t rate_hz, const char *roles_csv, uint8_t samples_per_frame, uint32_t lsb_nv,
              uint8_t adc_bits, const char *serial_no, uint32_t version, uint32_t now_ms)
{
    vmf_io io;
    uint8_t n = 0, k = 0;
    const char *p;
    memset(roles, 0, sizeof roles);
    for (p = roles_csv; *p != '\0'; p++) {
        if (*p == ',') {
            if (++n >= VMF_MAX_CHANNELS) {
                return -1;
            }
            k = 0;
        } else if (k < 15) {
            roles[n][k++] = *p;
        }
    }
    for (k = 0; k <= n; k++) {
        role_ptrs[k] = roles[k];
    }
    strncpy(serial, serial_no, sizeof serial - 1);
    cfg.fw_major = (uint8_t)(version >> 16);
    cfg.fw_minor = (uint8_t)(version >> 8);
    cfg.fw_patch = (uint8_t)version;
    cfg.sample_rate_hz = rate_hz;
    cfg.lsb_nv = lsb_nv;
    cfg.adc_bits = adc_bits;
    cfg.n_channels = (uint8_t)(n + 1);
    cfg.samples_per_frame = samples_per_frame;
    cfg.serial = serial;
    cfg.channel_roles = role_ptrs;
    io.write = host_write;
    io.tx_free = host_tx_free;
    io.ctx = NULL;
    tx_len = 0;
    tx_limit = HOST_TX_SIZE;
    return vmf_init(&dev, &cfg, io, now_ms);
}

vmf_device *vmfh_device(void) { return &dev; }
uint32_t vmfh_device_size(void) { return (uint32_t)sizeof dev; }
void vmfh_set_tx_seq(uint16_t seq) { dev.tx_seq = seq; }
void vmfh_set_tx_limit(uint32_t limit) { tx_limit = limit < HOST_TX_SIZE ? limit : HOST_TX_SIZE; }
void vmfh_hello(void) { vmf_hello(&dev); }
void vmfh_receive(const uint8_t *data, uint16_t len, uint32_t now_ms) { vmf_receive(&dev, data, len, now_ms); }
void vmfh_poll(uint32_t now_ms) { vmf_poll(&dev, now_ms); }
void vmfh_sample(const int16_t *values) { vmf_sample_push(&dev, values); }
void vmfh_set_contact(uint8_t ch, uint8_t ok) { vmf_set_contact(&dev, ch, ok); }
void vmfh_set_battery(uint8_t pct) { vmf_set_battery(&dev, pct); }
uint8_t vmfh_state(void) { return dev.state; }
const vmf_stats *vmfh_stats(void) { return &dev.stats; }

void vmfh_output(vmf_stim_output *out) { *out = vmf_stim_output_now(&dev); }

/* Copies out up to `max` bytes the device sent and forgets them; returns how many. */
uint32_t vmfh_take(uint8_t *out, uint32_t max)
{
    uint32_t n = tx_len < max ? tx_len : max;
    memcpy(out, tx, n);
    memmove(tx, tx + n, tx_len - n);
    tx_len -= n;
    return n;
}
