/* QEMU test harness (not part of the portable model), with no semihosting: the guest has no way to reach host
 * files. The host loads the images into the board's PSRAM before reset (qemu -device loader): a little-endian
 * uint32 count, then the int8 images back to back. Each output and the instructions it took go out on UART0,
 * which qemu writes to a file the host names; a trailer (magic, images, stack bytes, status) ends the stream and
 * a system reset request ends qemu (-no-reboot).
 *
 * Instructions: qemu runs with -icount shift=0, so virtual time advances 1 ns per instruction; the CMSDK APB timer
 * of the MPS2 boards counts the 25 MHz system clock, i.e. one tick per 40 instructions. Stack: the free stack
 * below the current stack pointer is painted before the first inference and scanned after the last.
 * Profile (a model built with firmware.profile, TF_PROFILE_POINTS in model.h): each image's record goes on with
 * the instructions of every profile point (the same clock read between layer calls) and of a calibration loop. */
#include <stdint.h>

#include "model.h"

#ifndef TF_IMAGES_ADDR
#error "TF_IMAGES_ADDR: the board address the host loads the test images at (tinyflow's build flags set it)"
#endif
#ifndef TF_UART_ADDR
#define TF_UART_ADDR 0x40004000u /* CMSDK APB UART0 */
#endif
#define UART ((volatile uint32_t *)TF_UART_ADDR) /* DATA, STATE, CTRL, INTSTATUS, BAUDDIV */
#define TIMER0 ((volatile uint32_t *)0x40000000u) /* CMSDK APB timer 0: CTRL, VALUE, RELOAD */
#define AIRCR (*(volatile uint32_t *)0xE000ED0Cu)
#define NS_PER_TICK 40u
#define PAINT 0xA5A5A5A5u
#define TRAILER_MAGIC 0x5446454Eu /* "NEFT" */

static void uart_init(void) {
    UART[4] = 16u; /* BAUDDIV: the smallest divider the CMSDK UART takes */
    UART[2] = 1u;  /* CTRL: TX enable */
}

static void uart_write(const void *buf, uint32_t n) {
    const uint8_t *b = (const uint8_t *)buf;
    for (uint32_t i = 0; i < n; i++) {
        while (UART[1] & 1u) { /* STATE: TX buffer full */
        }
        UART[0] = b[i];
    }
}

static void finish(uint32_t images, uint32_t stack, uint32_t status) {
    uint32_t trailer[4] = {TRAILER_MAGIC, images, stack, status};
    uart_write(trailer, sizeof trailer);
    __asm__ volatile("dsb");
    AIRCR = 0x05FA0004u; /* SYSRESETREQ: qemu -no-reboot exits */
    for (;;) {
    }
}

static volatile uint32_t done_images;
void Fault_Handler(void) { finish(done_images, 0, 3u); } /* overrides the start-up file's weak handler */

#ifdef TF_PROFILE_POINTS
/* the per-layer profile's clock (model.c reads it between layer calls): the timer's down-counting value */
uint32_t tf_profile_clock(void) { return TIMER0[1]; }

#define TF_CALIBRATION_LOOPS 20000u /* a loop of exactly 2 instructions per pass (subs, bne) */

/* the instructions a loop of known length takes, measured as the profile measures a layer: 2 * loops + the
 * clock read's few instructions */
static uint32_t calibration(void) {
    uint32_t n = TF_CALIBRATION_LOOPS;
    uint32_t t0 = tf_profile_clock();
    /* unified syntax: Armv6-M (Thumb-1) assembles `subs rd, rd, #imm` only in it */
    __asm__ volatile(".syntax unified\n1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    uint32_t t1 = tf_profile_clock();
    return (t0 - t1) * NS_PER_TICK;
}

/* after each output's instructions: each profile point's instructions, then the calibration loop's */
static void send_profile(void) {
    for (uint32_t k = 0; k < TF_PROFILE_POINTS; k++) {
        uint32_t insns = tf_profile[k] * NS_PER_TICK;
        uart_write(&insns, 4);
    }
    uint32_t cal = calibration();
    uart_write(&cal, 4);
}
#endif

static int8_t out_buf[TF_OUTPUT_BYTES] __attribute__((aligned(4)));
extern uint32_t _stack_limit; /* lowest address of the stack region (linker script) */

int main(void) {
    uart_init();
    const uint32_t n = *(const volatile uint32_t *)TF_IMAGES_ADDR;
    const int8_t *images = (const int8_t *)(TF_IMAGES_ADDR + 4u);
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &_stack_limit; (uint32_t)p < sp - 64u; p++) *p = PAINT;
    TIMER0[0] = 0;
    TIMER0[2] = 0xFFFFFFFFu;
    TIMER0[1] = 0xFFFFFFFFu;
    TIMER0[0] = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t0 = TIMER0[1];
        tf_model_run(images + i * (uint32_t)TF_INPUT_BYTES, out_buf);
        uint32_t t1 = TIMER0[1];
        uint32_t insns = (t0 - t1) * NS_PER_TICK;
        uart_write(out_buf, TF_OUTPUT_BYTES);
        uart_write(&insns, 4);
#ifdef TF_PROFILE_POINTS
        send_profile();
#endif
        done_images = i + 1;
    }
    uint32_t *p = &_stack_limit;
    while ((uint32_t)p < sp && *p == PAINT) p++;
    finish(n, sp - (uint32_t)p, 0u); /* stack: bytes below main's frame that tf_model_run touched */
    return 0;
}
