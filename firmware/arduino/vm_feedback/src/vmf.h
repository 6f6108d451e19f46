/* vm-feedback reference firmware core: the device side of docs/protocol.md in portable C99.
 *
 * No dynamic memory, no platform calls, no floating point. A board layer owns the hardware and
 * calls in from three places:
 *
 *   ADC interrupt  -> vmf_sample_push(): one value per channel, once per sample period
 *   UART receive   -> vmf_receive():     bytes from the host, in any chunks
 *   main loop      -> vmf_poll():        frames out, stimulation timing, the watchdog
 *
 * and reads back vmf_stim_output() to drive its stimulator pins. Bytes for the host go out
 * through the board's vmf_io.write callback, which must not block (a full UART ring is
 * reported through tx_free, and the core waits or drops, never spins).
 *
 * Time is the board's millisecond tick (now_ms, wrapping at 2^32). Only the ADC interrupt may
 * run concurrently with the rest; the sample double buffer is the only shared state, and its
 * hand-over is a single byte written by one side only.
 */
#ifndef VMF_H
#define VMF_H

#include <stddef.h>
#include <stdint.h>

#include "vmf_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* -- CRC and COBS (the framing of docs/protocol.md) --------------------------------------- */

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected, no final xor. */
#define VMF_CRC_INIT 0xFFFFu
uint16_t vmf_crc16_update(uint16_t crc, uint8_t byte);
uint16_t vmf_crc16(const uint8_t *data, size_t len);

/* -- message types, states and reasons ----------------------------------------------------- */

enum vmf_msg_type {
    VMF_MSG_DEVICE_INFO = 0x01,
    VMF_MSG_INFO_REQUEST = 0x02,
    VMF_MSG_SAMPLE_FRAME = 0x10,
    VMF_MSG_STATUS = 0x11,
    VMF_MSG_STIM_COMMAND = 0x20,
    VMF_MSG_STIM_ACK = 0x21,
    VMF_MSG_STIM_REFUSED = 0x22,
    VMF_MSG_HEARTBEAT = 0x30,
    VMF_MSG_ESTOP = 0x40,
    VMF_MSG_ESTOP_ACK = 0x41,
    VMF_MSG_ESTOP_CLEAR = 0x42,
    VMF_MSG_DEVICE_ERROR = 0x7F
};

enum vmf_stim_state {
    VMF_IDLE = 0,
    VMF_RAMP_UP = 1,
    VMF_HOLD = 2,
    VMF_RAMP_DOWN = 3,
    VMF_STOPPED_ESTOP = 4,
    VMF_STOPPED_WATCHDOG = 5
};

enum vmf_refusal {
    VMF_REFUSE_AMPLITUDE = 1,
    VMF_REFUSE_PULSE_WIDTH = 2,
    VMF_REFUSE_FREQUENCY = 3,
    VMF_REFUSE_BURST_TOO_LONG = 4,
    VMF_REFUSE_TOO_SOON = 5,
    VMF_REFUSE_NO_CONTACT = 6,
    VMF_REFUSE_ESTOP_LATCHED = 7,
    VMF_REFUSE_BUSY = 8,
    VMF_REFUSE_BAD_CHANNEL = 9
};

/* What went wrong with a received frame; the names and order are firmware_bridge's ErrorKind. */
enum vmf_rx_error {
    VMF_RX_OK = 0,
    VMF_RX_COBS,
    VMF_RX_CRC,
    VMF_RX_OVERSIZE,
    VMF_RX_MALFORMED,
    VMF_RX_UNKNOWN_TYPE,
    VMF_RX_UNSUPPORTED_VERSION,
    VMF_RX_WRONG_DIRECTION,
    VMF_RX_ERROR_KINDS
};

/* DeviceError codes the firmware itself sends. */
enum vmf_device_error_code { VMF_ERR_ADC_OVERRUN = 3, VMF_ERR_TX_OVERFLOW = 4 };

/* -- streaming frame receiver ---------------------------------------------------------------
 * Decodes COBS and checks the CRC byte by byte, keeping only the first VMF_RX_KEEP decoded
 * bytes: a 1024-byte frame costs 1024 CRC updates, not 1024 bytes of RAM. */
typedef struct {
    uint16_t encoded;   /* bytes of this frame so far, before the delimiter */
    uint16_t decoded;   /* decoded bytes so far, including the two still in `tail` */
    uint16_t crc;       /* over decoded bytes that are known not to be the CRC */
    uint8_t tail[2];    /* the last two decoded bytes: the CRC, if the frame ends here */
    uint8_t block_left; /* data bytes left in the current COBS block */
    uint8_t zero_due;   /* the current block ends with an implied 0x00 if more follows */
    uint8_t discarding; /* oversize: dropping everything up to the next 0x00 */
    uint8_t keep[VMF_RX_KEEP];
} vmf_rx;

/* A complete, checked frame (or the reason it was rejected). */
typedef struct {
    uint8_t error;          /* enum vmf_rx_error */
    uint8_t version;
    uint8_t msg_type;
    uint16_t seq;
    uint16_t body_len;      /* may exceed what is kept */
    const uint8_t *body;    /* first min(body_len, VMF_RX_KEEP - 4) bytes */
} vmf_frame;

void vmf_rx_reset(vmf_rx *rx);
/* Feeds one byte; returns 1 when `out` holds a finished frame or an error, 0 otherwise.
 * `out->body` points into `rx` and is valid until the next call. */
int vmf_rx_byte(vmf_rx *rx, uint8_t byte, vmf_frame *out);

/* -- the device ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t fw_major, fw_minor, fw_patch;
    uint32_t sample_rate_hz; /* integer Hz; sent as an exact f64 */
    uint32_t lsb_nv;         /* nanovolts per count at the electrodes */
    uint8_t adc_bits;        /* samples are clipped to this signed range, 2..16 */
    uint8_t n_channels;      /* 1..VMF_MAX_CHANNELS */
    uint8_t samples_per_frame; /* 1..VMF_MAX_SAMPLES_PER_FRAME */
    const char *serial;
    const char *const *channel_roles; /* n_channels strings: "VM", "VL", ... */
} vmf_device_config;

typedef struct {
    /* Sends bytes to the host. Never called with more than tx_free() bytes. */
    void (*write)(void *ctx, const uint8_t *data, uint16_t len);
    uint16_t (*tx_free)(void *ctx);
    void *ctx;
} vmf_io;

/* What the stimulator output stage should do now. amplitude_dma follows the ramps; when
 * `active` is 0 every output must be off, whatever the other fields say. */
typedef struct {
    uint8_t active;
    uint8_t channel;
    uint16_t amplitude_dma; /* 0.1 mA */
    uint16_t pulse_width_us;
    uint16_t frequency_hz;
} vmf_stim_output;

typedef struct {
    uint32_t frames_sent;
    uint32_t samples_sent;
    uint32_t samples_clipped;
    uint32_t samples_dropped;  /* ADC overruns: the counter still advances, so the host sees a gap */
    uint32_t frames_dropped;   /* control frames that did not fit the UART ring */
    uint32_t host_frames_ok;
    uint32_t rx_errors[VMF_RX_ERROR_KINDS];
    uint32_t commands_accepted;
    uint32_t commands_refused;
    uint32_t estops;
    uint32_t watchdog_trips;
} vmf_stats;

typedef struct {
    /* the command being run */
    uint32_t command_id;
    uint8_t channel;
    uint16_t amplitude_dma, pulse_width_us, frequency_hz;
    uint16_t ramp_up_ms, hold_ms, ramp_down_ms;
    uint32_t start_ms;
} vmf_burst;

typedef struct {
    const vmf_device_config *cfg;
    vmf_io io;
    vmf_rx rx;
    vmf_stats stats;
    uint16_t tx_seq;

    /* samples: the ADC interrupt fills block[fill]; block[1 - fill] waits for the main loop
     * while `ready` is 1. Only the interrupt sets ready, only the main loop clears it. */
    int16_t block[2][VMF_MAX_SAMPLES_PER_FRAME * VMF_MAX_CHANNELS];
    uint32_t block_first[2];
    volatile uint8_t ready;
    volatile uint8_t overrun_pending;
    uint8_t fill;
    uint8_t fill_n;
    uint32_t samples_taken; /* every sample period the ADC reported, sent or dropped */
    uint32_t clipped_isr;
    uint32_t dropped_isr;

    /* stimulation */
    uint8_t state;          /* enum vmf_stim_state */
    uint8_t burst_running;
    uint8_t phase;          /* 0 ramp up, 1 hold, 2 ramp down */
    uint8_t estop_latched;
    uint8_t have_rest;      /* a burst has ended or been stopped: rest_from_ms is valid */
    uint8_t have_host;      /* a valid host frame has arrived: last_host_ms is valid */
    vmf_burst burst;
    uint32_t rest_from_ms;
    uint32_t last_host_ms;
    uint32_t now_ms;
    uint32_t contact;       /* bit i: electrode contact on channel i */
    uint8_t battery_pct;

    /* device_time_us of the next block, kept as whole microseconds plus a remainder in units
     * of 1/sample_rate_hz, so no 64-bit division runs per frame */
    uint32_t time_next_first;
    uint64_t time_us;
    uint32_t time_frac;
    uint32_t time_step_us, time_step_frac;

    /* outgoing frame, before COBS (written out block by block, so no second buffer) */
    uint8_t tx[VMF_HEADER_SIZE + 14 + 2 * VMF_MAX_SAMPLES_PER_FRAME * VMF_MAX_CHANNELS +
               VMF_CRC_SIZE < VMF_TX_MIN
                   ? VMF_TX_MIN
                   : VMF_HEADER_SIZE + 14 + 2 * VMF_MAX_SAMPLES_PER_FRAME * VMF_MAX_CHANNELS +
                         VMF_CRC_SIZE];

    /* status reporting */
    uint8_t sent_state, sent_battery;
    uint32_t sent_contact;
    uint32_t last_status_ms;
    uint8_t status_ever;
} vmf_device;

/* Returns 0, or -1 if the configuration does not fit this build. Sends nothing. */
int vmf_init(vmf_device *dev, const vmf_device_config *cfg, vmf_io io, uint32_t now_ms);
/* DeviceInfo, as sent when the link comes up. */
void vmf_hello(vmf_device *dev);

/* ADC interrupt: one value per channel (signed counts, clipped here to adc_bits). */
void vmf_sample_push(vmf_device *dev, const int16_t *values);

/* Host bytes, from the main loop (not from the UART interrupt: replies are written here). */
void vmf_receive(vmf_device *dev, const uint8_t *data, uint16_t len, uint32_t now_ms);

/* Main loop: watchdog, burst phases, sample frames, periodic Status. */
void vmf_poll(vmf_device *dev, uint32_t now_ms);

/* Electrode contact per channel, from the board (lead-off detection). Losing it mid-burst
 * stops the burst at the next vmf_poll. */
void vmf_set_contact(vmf_device *dev, uint8_t channel, uint8_t ok);
void vmf_set_battery(vmf_device *dev, uint8_t pct);

/* What the output stage must do at now_ms (the last time passed in). */
vmf_stim_output vmf_stim_output_now(const vmf_device *dev);

/* -- message builders ---------------------------------------------------------------------
 * Each frames one message with the next seq and writes it; returns 1 if written, 0 if the UART
 * ring had no room (the frame is dropped and counted, and the caller may retry). The
 * state machine uses these; they are public so tests can check every layout byte for byte. */
int vmf_send_device_info(vmf_device *dev);
int vmf_send_samples(vmf_device *dev, uint32_t counter, uint64_t time_us, uint8_t n_channels,
                     uint8_t n_samples, const int16_t *samples);
int vmf_send_status(vmf_device *dev, uint8_t battery_pct, uint8_t state, uint8_t n_channels,
                    uint32_t contact);
int vmf_send_u32(vmf_device *dev, uint8_t msg_type, uint32_t value); /* StimAck, Heartbeat */
int vmf_send_refused(vmf_device *dev, uint32_t command_id, uint8_t reason);
int vmf_send_empty(vmf_device *dev, uint8_t msg_type);               /* EmergencyStopAck */
int vmf_send_device_error(vmf_device *dev, uint16_t code, const char *message);

#ifdef __cplusplus
}
#endif

#endif
