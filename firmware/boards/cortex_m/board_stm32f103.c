/* STM32F103C8 ("Blue Pill", Cortex-M3, 8 MHz crystal -> 72 MHz) board layer, registers only.
 *
 * Pins:
 *   PA0, PA1    EMG channel 0 (VM), 1 (VL), ADC1 in 0..3.3 V, mid-rail at rest
 *   PB12, PB13  lead-off of channel 0, 1: HIGH = electrode off (pulled up)
 *   PB0, PB1    stimulator enable of channel 0, 1: HIGH only while a burst runs
 *   PA6         pulse train, TIM3 CH1 PWM (HIGH for pulse_width_us every 1/frequency)
 *   PB6         amplitude setpoint, TIM4 CH1 PWM at 72 kHz: duty 100 % = 60.0 mA
 *   PA9, PA10   USART1 TX, RX to the host (a USB-serial adapter), VMF_BAUD 8N1
 *
 * SysTick is the millisecond clock, TIM2 the sample clock (its interrupt converts each channel
 * and hands the set to the core), and the independent watchdog resets the MCU if the main loop
 * stalls for 250 ms (pins then float: the stimulator's enable inputs need pull-downs).
 */
#include <stdint.h>

#include "vmf.h"

#ifndef VMF_BAUD
#define VMF_BAUD 1000000u
#endif
#ifndef VMF_RATE_HZ
#define VMF_RATE_HZ 2000u
#endif
#ifndef VMF_N_CHANNELS
#define VMF_N_CHANNELS 2
#endif
#ifndef VMF_LSB_NV
#define VMF_LSB_NV 4028u /* 3.3 V / 4096 counts through a x200 front end */
#endif

#define HCLK 72000000u
#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC 0x40021000u
#define FLASH_ACR 0x40022000u
#define GPIOA 0x40010800u
#define GPIOB 0x40010C00u
#define USART1 0x40013800u
#define ADC1 0x40012400u
#define TIM2 0x40000000u
#define TIM3 0x40000400u
#define TIM4 0x40000800u
#define IWDG 0x40003000u
#define SYSTICK 0xE000E010u
#define NVIC_ISER0 0xE000E100u
#define NVIC_ISER1 0xE000E104u

#define TX_SIZE 1024u
#define RX_SIZE 256u

static const char *const roles[] = {"VM", "VL", "C2", "C3"};
static const vmf_device_config config = {
    1, 0, 0, VMF_RATE_HZ, VMF_LSB_NV, 12, VMF_N_CHANNELS, VMF_MAX_SAMPLES_PER_FRAME,
    "VMF-STM32-0001", roles};

static vmf_device dev;
static volatile uint32_t now_ms;
static uint8_t tx_buf[TX_SIZE], rx_buf[RX_SIZE];
static volatile uint32_t tx_head, tx_tail, rx_head, rx_tail;

/* -- interrupts ---------------------------------------------------------------------------- */

void systick_handler(void);
void tim2_handler(void);
void usart1_handler(void);
void reset_handler(void);
static void default_handler(void);

void systick_handler(void) { now_ms++; }

void tim2_handler(void)
{
    int16_t set[VMF_N_CHANNELS];
    uint32_t ch;
    REG(TIM2 + 0x10) = 0; /* clear the update flag */
    for (ch = 0; ch < VMF_N_CHANNELS; ch++) {
        REG(ADC1 + 0x34) = ch;       /* SQR3: one conversion of channel ch */
        REG(ADC1 + 0x08) |= 1u << 22; /* SWSTART */
        while (!(REG(ADC1 + 0x00) & 2u)) {
        }
        set[ch] = (int16_t)((int32_t)(REG(ADC1 + 0x4C) & 0xFFFu) - 2048);
    }
    vmf_sample_push(&dev, set);
}

void usart1_handler(void)
{
    uint32_t sr = REG(USART1 + 0x00);
    if (sr & (1u << 5)) { /* RXNE */
        uint8_t byte = (uint8_t)REG(USART1 + 0x04);
        if (rx_head - rx_tail < RX_SIZE) {
            rx_buf[rx_head++ % RX_SIZE] = byte;
        }
    }
    if ((sr & (1u << 7)) && (REG(USART1 + 0x0C) & (1u << 7))) { /* TXE, enabled */
        if (tx_tail == tx_head) {
            REG(USART1 + 0x0C) &= ~(1u << 7);
        } else {
            REG(USART1 + 0x04) = tx_buf[tx_tail++ % TX_SIZE];
        }
    }
}

static void default_handler(void)
{
    for (;;) {
    }
}

extern uint32_t _stack_top, _data_load, _data_start, _data_end, _bss_start, _bss_end;
typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) static const vector vectors[16 + 60] = {
    [0] = (vector)(uintptr_t)&_stack_top,
    [1] = reset_handler,
    [2] = default_handler,
    [3] = default_handler,
    [15] = systick_handler,
    [16 + 28] = tim2_handler,
    [16 + 37] = usart1_handler,
};

/* -- UART for the core --------------------------------------------------------------------- */

static uint16_t uart_tx_free(void *ctx)
{
    (void)ctx;
    return (uint16_t)(TX_SIZE - 1u - (tx_head - tx_tail));
}

static void uart_write(void *ctx, const uint8_t *data, uint16_t len)
{
    (void)ctx;
    while (len--) {
        tx_buf[tx_head++ % TX_SIZE] = *data++;
    }
    REG(USART1 + 0x0C) |= 1u << 7; /* TXEIE */
}

/* -- stimulator ---------------------------------------------------------------------------- */

static uint16_t applied_pw, applied_freq;

static void stim_off(void)
{
    REG(GPIOB + 0x14) = (1u << 0) | (1u << 1); /* BRR: enables low */
    REG(TIM3 + 0x34) = 0;                       /* no pulses */
    REG(TIM4 + 0x34) = 0;                       /* setpoint 0 */
    applied_pw = applied_freq = 0;
}

static void stim_apply(void)
{
    vmf_stim_output out = vmf_stim_output_now(&dev);
    uint32_t tick_us;
    if (!out.active) {
        stim_off();
        return;
    }
    REG(TIM4 + 0x34) = (uint32_t)out.amplitude_dma * 1000u / VMF_MAX_AMPLITUDE_DMA;
    REG(GPIOB + 0x10) = out.channel == 0 ? (1u << 0) | (1u << 17) : (1u << 1) | (1u << 16);
    if (out.pulse_width_us == applied_pw && out.frequency_hz == applied_freq) {
        return;
    }
    tick_us = out.frequency_hz < 16u ? 10u : 1u; /* keep the period within 16 bits */
    REG(TIM3 + 0x28) = 72u * tick_us - 1u;
    REG(TIM3 + 0x2C) = 1000000u / tick_us / out.frequency_hz - 1u;
    REG(TIM3 + 0x34) = (out.pulse_width_us + tick_us - 1u) / tick_us;
    REG(TIM3 + 0x14) = 1; /* UG: load the new period now */
    applied_pw = out.pulse_width_us;
    applied_freq = out.frequency_hz;
}

/* -- start-up ------------------------------------------------------------------------------ */

static void clocks_init(void)
{
    REG(RCC + 0x00) |= 1u << 16; /* HSE on */
    while (!(REG(RCC + 0x00) & (1u << 17))) {
    }
    REG(FLASH_ACR) = 0x12;                            /* two wait states, prefetch */
    REG(RCC + 0x04) = (7u << 18) | (1u << 16) | (4u << 8); /* PLL x9 from HSE, APB1 /2 */
    REG(RCC + 0x00) |= 1u << 24;
    while (!(REG(RCC + 0x00) & (1u << 25))) {
    }
    REG(RCC + 0x04) |= 2u; /* system clock = PLL */
    while ((REG(RCC + 0x04) & 0xCu) != 0x8u) {
    }
    REG(RCC + 0x04) |= 2u << 14;                                   /* ADC clock 72 / 6 = 12 MHz */
    REG(RCC + 0x18) |= (1u << 2) | (1u << 3) | (1u << 9) | (1u << 14); /* GPIOA/B, ADC1, USART1 */
    REG(RCC + 0x1C) |= (1u << 0) | (1u << 1) | (1u << 2);           /* TIM2, TIM3, TIM4 */
}

static void pins_init(void)
{
    /* PA0/PA1 analog, PA6 AF push-pull, PA9 AF push-pull, PA10 input */
    REG(GPIOA + 0x00) = (REG(GPIOA + 0x00) & 0xF0FFFF00u) | (0xBu << 24);
    REG(GPIOA + 0x04) = (REG(GPIOA + 0x04) & 0xFFFFF00Fu) | (0xBu << 4) | (0x4u << 8);
    /* PB0/PB1 outputs, PB6 AF push-pull, PB12/PB13 inputs with pull-up */
    REG(GPIOB + 0x00) = (REG(GPIOB + 0x00) & 0xF0FFFF00u) | 0x22u | (0xBu << 24);
    REG(GPIOB + 0x04) = (REG(GPIOB + 0x04) & 0xFF00FFFFu) | (0x88u << 16);
    REG(GPIOB + 0x10) = (1u << 12) | (1u << 13) | (1u << 16) | (1u << 17);
}

static void peripherals_init(void)
{
    REG(USART1 + 0x08) = (HCLK + VMF_BAUD / 2u) / VMF_BAUD;
    REG(USART1 + 0x0C) = (1u << 13) | (1u << 3) | (1u << 2) | (1u << 5); /* UE TE RE RXNEIE */
    REG(ADC1 + 0x08) = 1u | (7u << 17) | (1u << 20); /* ADON, SWSTART trigger */
    REG(ADC1 + 0x10) = (2u << 0) | (2u << 3);        /* 13.5-cycle sampling on ch 0, 1 */
    REG(TIM2 + 0x28) = 71;                           /* 1 MHz */
    REG(TIM2 + 0x2C) = 1000000u / VMF_RATE_HZ - 1u;
    REG(TIM2 + 0x0C) = 1;   /* update interrupt */
    REG(TIM2 + 0x00) = 1;
    REG(TIM3 + 0x18) = 0x68; /* CH1 PWM mode 1, preload */
    REG(TIM3 + 0x20) = 1;
    REG(TIM3 + 0x00) = 0x81;
    REG(TIM4 + 0x2C) = 999; /* 72 kHz */
    REG(TIM4 + 0x18) = 0x68;
    REG(TIM4 + 0x20) = 1;
    REG(TIM4 + 0x00) = 0x81;
    REG(SYSTICK + 0x04) = HCLK / 1000u - 1u;
    REG(SYSTICK + 0x08) = 0;
    REG(SYSTICK + 0x00) = 7;
    REG(NVIC_ISER0) = 1u << 28;
    REG(NVIC_ISER1) = 1u << (37 - 32);
    REG(IWDG + 0x00) = 0xCCCC; /* start, then 40 kHz LSI / 32 x 312 = 250 ms */
    REG(IWDG + 0x00) = 0x5555;
    REG(IWDG + 0x04) = 3;
    REG(IWDG + 0x08) = 312;
}

static uint32_t millis(void) { return now_ms; } /* a 32-bit load is atomic on Cortex-M */

__attribute__((noreturn)) static void main_loop(void)
{
    static const vmf_io io = {uart_write, uart_tx_free, 0};
    uint8_t chunk[32];
    uint16_t n;
    vmf_init(&dev, &config, io, 0);
    clocks_init();
    pins_init();
    stim_off();
    peripherals_init();
    vmf_hello(&dev);
    for (;;) {
        REG(IWDG + 0x00) = 0xAAAA;
        vmf_set_contact(&dev, 0, !(REG(GPIOB + 0x08) & (1u << 12)));
        vmf_set_contact(&dev, 1, !(REG(GPIOB + 0x08) & (1u << 13)));
        n = 0;
        while (n < sizeof chunk && rx_tail != rx_head) {
            chunk[n++] = rx_buf[rx_tail++ % RX_SIZE];
        }
        if (n) {
            vmf_receive(&dev, chunk, n, millis());
            stim_apply();
        }
        vmf_poll(&dev, millis());
        stim_apply();
        __asm__ volatile("wfi");
    }
}

void reset_handler(void)
{
    uint32_t *src = &_data_load, *dst = &_data_start;
    while (dst < &_data_end) {
        *dst++ = *src++;
    }
    for (dst = &_bss_start; dst < &_bss_end;) {
        *dst++ = 0;
    }
    main_loop();
}
