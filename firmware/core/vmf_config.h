/* Build-time sizes and the firmware's hard stimulation caps.
 *
 * Every buffer in the core is static and sized here, so RAM use is known at link time. A board
 * may override the sizes with -D flags; the caps are not meant to be changed per board: they are
 * the same numbers as FirmwareLimits in firmware_bridge/emulator.py and docs/protocol.md, and
 * tests/firmware_c checks that they agree.
 */
#ifndef VMF_CONFIG_H
#define VMF_CONFIG_H

/* Most EMG channels a build can carry (also the number of stimulation channels). */
#ifndef VMF_MAX_CHANNELS
#define VMF_MAX_CHANNELS 2
#endif

/* Samples per SampleFrame. 20 at 2 kHz is a frame every 10 ms, as the emulator sends. */
#ifndef VMF_MAX_SAMPLES_PER_FRAME
#define VMF_MAX_SAMPLES_PER_FRAME 20
#endif

/* Decoded bytes of a received frame that are kept. The largest host-to-device frame
 * (StimCommand) is 4 + 17 + 2 = 23 bytes; longer frames are still CRC-checked and classified,
 * exactly as the Python bridge does, but their bodies cannot fit a host message, so nothing
 * beyond this many bytes is ever needed. */
#ifndef VMF_RX_KEEP
#define VMF_RX_KEEP 32
#endif

/* Smallest outgoing frame buffer: DeviceInfo with a serial and roles of up to 15 bytes each
 * and one 31-byte DeviceError must fit. */
#ifndef VMF_TX_MIN
#define VMF_TX_MIN (24 + 16 + 16 * VMF_MAX_CHANNELS)
#endif
#define VMF_MAX_STRING 15u

/* Protocol constants (docs/protocol.md). */
#define VMF_PROTOCOL_VERSION 1u
#define VMF_MAX_FRAME 1024u /* decoded bytes, header and CRC included */
#define VMF_MAX_ENCODED (VMF_MAX_FRAME + (VMF_MAX_FRAME + 253u) / 254u)
#define VMF_HEADER_SIZE 4u
#define VMF_CRC_SIZE 2u

/* Hard caps, checked on every StimCommand whatever the host says. */
#define VMF_MAX_AMPLITUDE_DMA 600u /* 0.1 mA units: 60.0 mA */
#define VMF_MAX_PULSE_WIDTH_US 400u
#define VMF_MIN_FREQUENCY_HZ 1u
#define VMF_MAX_FREQUENCY_HZ 100u
#define VMF_MAX_BURST_MS 10000ul
#define VMF_MIN_REST_MS 1000ul
#define VMF_WATCHDOG_MS 250ul
#define VMF_STATUS_INTERVAL_MS 500ul

#endif
