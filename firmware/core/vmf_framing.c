/* COBS framing and CRC-16/CCITT-FALSE, byte by byte (docs/protocol.md, "Framing").
 *
 * The receiver mirrors firmware_bridge/framing.py decision for decision, so the same bytes
 * give the same verdict on both sides (the shared vectors in firmware/vectors check it):
 * too long before a delimiter -> oversize; a COBS code that runs past the delimiter -> cobs;
 * more than 1024 decoded bytes -> oversize; fewer than 6 -> malformed; then the CRC.
 */
#include "vmf.h"

uint16_t vmf_crc16_update(uint16_t crc, uint8_t byte)
{
    /* The table-free form of the CCITT update: a handful of shifts per byte, no 512-byte
     * table in flash. (x is the top byte of crc mixed with the input.) */
    uint8_t x = (uint8_t)((crc >> 8) ^ byte);
    x ^= (uint8_t)(x >> 4);
    return (uint16_t)((uint16_t)(crc << 8) ^ (uint16_t)((uint16_t)x << 12) ^
                      (uint16_t)((uint16_t)x << 5) ^ (uint16_t)x);
}

uint16_t vmf_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = VMF_CRC_INIT;
    size_t i;
    for (i = 0; i < len; i++) {
        crc = vmf_crc16_update(crc, data[i]);
    }
    return crc;
}

void vmf_rx_reset(vmf_rx *rx)
{
    /* `keep` is left alone: the frame just finished still points into it. */
    rx->encoded = 0;
    rx->decoded = 0;
    rx->crc = VMF_CRC_INIT;
    rx->tail[0] = 0;
    rx->tail[1] = 0;
    rx->block_left = 0;
    rx->zero_due = 0;
}

static void emit(vmf_rx *rx, uint8_t byte)
{
    /* The CRC runs two bytes behind: the last two decoded bytes are the received CRC if the
     * frame ends now, and only become data when a third byte arrives. */
    if (rx->decoded >= 2) {
        rx->crc = vmf_crc16_update(rx->crc, rx->tail[0]);
    }
    rx->tail[0] = rx->tail[1];
    rx->tail[1] = byte;
    if (rx->decoded < VMF_RX_KEEP) {
        rx->keep[rx->decoded] = byte;
    }
    rx->decoded++;
}

static int finish(vmf_rx *rx, vmf_frame *out)
{
    uint16_t received;
    out->error = VMF_RX_OK;
    out->version = 0;
    out->msg_type = 0;
    out->seq = 0;
    out->body_len = 0;
    out->body = rx->keep + VMF_HEADER_SIZE;
    if (rx->block_left != 0) { /* a code promised bytes the delimiter cut off */
        out->error = VMF_RX_COBS;
    } else if (rx->decoded > VMF_MAX_FRAME) {
        out->error = VMF_RX_OVERSIZE;
    } else if (rx->decoded < VMF_HEADER_SIZE + VMF_CRC_SIZE) {
        out->error = VMF_RX_MALFORMED;
    } else {
        received = (uint16_t)(rx->tail[0] | ((uint16_t)rx->tail[1] << 8));
        if (received != rx->crc) {
            out->error = VMF_RX_CRC;
        } else {
            out->version = rx->keep[0];
            out->msg_type = rx->keep[1];
            out->seq = (uint16_t)(rx->keep[2] | ((uint16_t)rx->keep[3] << 8));
            out->body_len = (uint16_t)(rx->decoded - VMF_HEADER_SIZE - VMF_CRC_SIZE);
        }
    }
    return 1;
}

int vmf_rx_byte(vmf_rx *rx, uint8_t byte, vmf_frame *out)
{
    int done;
    if (byte == 0) {
        if (rx->discarding) { /* that 0x00 ended the oversize frame: back in sync */
            rx->discarding = 0;
            return 0;
        }
        if (rx->encoded == 0) {
            return 0; /* empty frame: a sender may flush with a lone 0x00 */
        }
        done = finish(rx, out);
        vmf_rx_reset(rx);
        return done;
    }
    if (rx->discarding) {
        return 0;
    }
    if (++rx->encoded > VMF_MAX_ENCODED) {
        vmf_rx_reset(rx);
        rx->discarding = 1;
        out->error = VMF_RX_OVERSIZE;
        out->body = rx->keep + VMF_HEADER_SIZE;
        out->body_len = 0;
        return 1;
    }
    if (rx->block_left == 0) { /* a code byte */
        if (rx->zero_due) {
            emit(rx, 0);
        }
        rx->block_left = (uint8_t)(byte - 1);
        rx->zero_due = (uint8_t)(byte != 0xFF);
    } else {
        emit(rx, byte);
        rx->block_left--;
    }
    return 0;
}
