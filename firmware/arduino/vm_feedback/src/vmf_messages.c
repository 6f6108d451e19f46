/* Outgoing frames: header, body, CRC into dev->tx, then COBS straight into the UART ring.
 * Layouts are those of firmware_bridge/codec.py (all little-endian). */
#include "vmf.h"

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p = put_u16(p, (uint16_t)v);
    return put_u16(p, (uint16_t)(v >> 16));
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    p = put_u32(p, (uint32_t)v);
    return put_u32(p, (uint32_t)(v >> 32));
}

/* IEEE 754 binary64 of a whole number, built from its bits: AVR's `double` is 32-bit, and the
 * sample rate must reach the host exactly. */
static uint8_t *put_f64_uint(uint8_t *p, uint32_t n)
{
    uint64_t bits = 0;
    int e = 31;
    if (n != 0) {
        while (!((n >> e) & 1u)) {
            e--;
        }
        bits = ((uint64_t)(1023 + e) << 52) | (((uint64_t)n << (52 - e)) & 0xFFFFFFFFFFFFFull);
    }
    return put_u64(p, bits);
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    uint8_t n = 0;
    while (s[n] != '\0' && n < VMF_MAX_STRING) {
        p[1 + n] = (uint8_t)s[n];
        n++;
    }
    p[0] = n;
    return p + 1 + n;
}

static uint8_t *begin(vmf_device *dev, uint8_t msg_type)
{
    dev->tx[0] = VMF_PROTOCOL_VERSION;
    dev->tx[1] = msg_type;
    put_u16(dev->tx + 2, dev->tx_seq);
    return dev->tx + VMF_HEADER_SIZE;
}

/* Finishes the frame that ends at `end` and writes it, COBS block by COBS block. */
static int finish(vmf_device *dev, uint8_t *end)
{
    uint16_t len = (uint16_t)(end - dev->tx);
    uint16_t bound, start, i;
    uint8_t code;
    const uint8_t zero = 0;
    end = put_u16(end, vmf_crc16(dev->tx, len));
    len = (uint16_t)(len + VMF_CRC_SIZE);
    bound = (uint16_t)(len + len / 254u + 2u); /* code bytes and the delimiter */
    if (dev->io.tx_free(dev->io.ctx) < bound) {
        dev->stats.frames_dropped++;
        return 0;
    }
    dev->tx_seq++;
    start = 0;
    for (;;) {
        /* one block: up to 254 non-zero bytes, then an (implied) zero or the end */
        i = start;
        while (i < len && dev->tx[i] != 0 && (uint16_t)(i - start) < 254u) {
            i++;
        }
        code = (uint8_t)(i - start + 1u);
        dev->io.write(dev->io.ctx, &code, 1);
        if (i > start) {
            dev->io.write(dev->io.ctx, dev->tx + start, (uint16_t)(i - start));
        }
        if (i == len) {
            break;
        }
        start = (uint16_t)(code == 0xFF ? i : i + 1u); /* a full block has no zero to skip */
    }
    dev->io.write(dev->io.ctx, &zero, 1);
    dev->stats.frames_sent++;
    return 1;
}

int vmf_send_device_info(vmf_device *dev)
{
    const vmf_device_config *c = dev->cfg;
    uint8_t *p = begin(dev, VMF_MSG_DEVICE_INFO);
    uint8_t i;
    *p++ = VMF_PROTOCOL_VERSION;
    *p++ = c->fw_major;
    *p++ = c->fw_minor;
    *p++ = c->fw_patch;
    p = put_f64_uint(p, c->sample_rate_hz);
    p = put_u32(p, c->lsb_nv);
    *p++ = c->adc_bits;
    *p++ = c->n_channels;
    p = put_str(p, c->serial);
    for (i = 0; i < c->n_channels; i++) {
        p = put_str(p, c->channel_roles[i]);
    }
    return finish(dev, p);
}

int vmf_send_samples(vmf_device *dev, uint32_t counter, uint64_t time_us, uint8_t n_channels,
                     uint8_t n_samples, const int16_t *samples)
{
    uint8_t *p = begin(dev, VMF_MSG_SAMPLE_FRAME);
    uint16_t i, n = (uint16_t)(n_channels * n_samples);
    if (n > VMF_MAX_CHANNELS * VMF_MAX_SAMPLES_PER_FRAME) {
        return 0; /* does not fit this build's buffer; only a test can ask for it */
    }
    p = put_u32(p, counter);
    p = put_u64(p, time_us);
    *p++ = n_channels;
    *p++ = n_samples;
    for (i = 0; i < n; i++) {
        p = put_u16(p, (uint16_t)samples[i]);
    }
    return finish(dev, p);
}

int vmf_send_status(vmf_device *dev, uint8_t battery_pct, uint8_t state, uint8_t n_channels,
                    uint32_t contact)
{
    uint8_t *p = begin(dev, VMF_MSG_STATUS);
    *p++ = battery_pct;
    *p++ = state;
    *p++ = n_channels;
    p = put_u32(p, contact);
    return finish(dev, p);
}

int vmf_send_u32(vmf_device *dev, uint8_t msg_type, uint32_t value)
{
    return finish(dev, put_u32(begin(dev, msg_type), value));
}

int vmf_send_refused(vmf_device *dev, uint32_t command_id, uint8_t reason)
{
    uint8_t *p = put_u32(begin(dev, VMF_MSG_STIM_REFUSED), command_id);
    *p++ = reason;
    return finish(dev, p);
}

int vmf_send_empty(vmf_device *dev, uint8_t msg_type)
{
    return finish(dev, begin(dev, msg_type));
}

int vmf_send_device_error(vmf_device *dev, uint16_t code, const char *message)
{
    uint8_t *p = put_u16(begin(dev, VMF_MSG_DEVICE_ERROR), code);
    return finish(dev, put_str(p, message));
}
