/* The part of the Phidget22 C API rfid_daemon uses. With the vendor's <phidget22.h> installed it
 * is used as is; otherwise the same declarations are given here, so that the daemon can be built
 * against a stand-in library (the integration tests' fake reader). */
#pragma once

#if __has_include(<phidget22.h>)
#include <phidget22.h>
#else
#include <stdint.h>

typedef enum {
        EPHIDGET_OK = 0,
} PhidgetReturnCode;

typedef int Phidget_ErrorEventCode;

typedef enum {
        PHIDGET_RFID_PROTOCOL_EM4100 = 1,
        PHIDGET_RFID_PROTOCOL_ISO11785_FDX_B = 2,
        PHIDGET_RFID_PROTOCOL_PHIDGETS = 3,
} PhidgetRFID_Protocol;

typedef struct _Phidget *PhidgetHandle;
typedef struct _PhidgetRFID *PhidgetRFIDHandle;
typedef struct _PhidgetDigitalOutput *PhidgetDigitalOutputHandle;

typedef void (*Phidget_OnAttachCallback)(PhidgetHandle ch, void *ctx);
typedef void (*Phidget_OnDetachCallback)(PhidgetHandle ch, void *ctx);
typedef void (*Phidget_OnErrorCallback)(PhidgetHandle ch, void *ctx, Phidget_ErrorEventCode code,
                                        const char *description);
typedef void (*PhidgetRFID_OnTagCallback)(PhidgetRFIDHandle ch, void *ctx, const char *tag,
                                          PhidgetRFID_Protocol protocol);
typedef void (*PhidgetRFID_OnTagLostCallback)(PhidgetRFIDHandle ch, void *ctx, const char *tag,
                                              PhidgetRFID_Protocol protocol);

PhidgetReturnCode Phidget_getErrorDescription(PhidgetReturnCode errorCode, const char **errorString);
PhidgetReturnCode Phidget_open(PhidgetHandle ch);
PhidgetReturnCode Phidget_close(PhidgetHandle ch);
PhidgetReturnCode Phidget_setChannel(PhidgetHandle ch, int channel);
PhidgetReturnCode Phidget_getDeviceSerialNumber(PhidgetHandle ch, int32_t *deviceSerialNumber);
PhidgetReturnCode Phidget_setOnAttachHandler(PhidgetHandle ch, Phidget_OnAttachCallback fptr, void *ctx);
PhidgetReturnCode Phidget_setOnDetachHandler(PhidgetHandle ch, Phidget_OnDetachCallback fptr, void *ctx);
PhidgetReturnCode Phidget_setOnErrorHandler(PhidgetHandle ch, Phidget_OnErrorCallback fptr, void *ctx);

PhidgetReturnCode PhidgetRFID_create(PhidgetRFIDHandle *ch);
PhidgetReturnCode PhidgetRFID_delete(PhidgetRFIDHandle *ch);
PhidgetReturnCode PhidgetRFID_setAntennaEnabled(PhidgetRFIDHandle ch, int antennaEnabled);
PhidgetReturnCode PhidgetRFID_setOnTagHandler(PhidgetRFIDHandle ch, PhidgetRFID_OnTagCallback fptr, void *ctx);
PhidgetReturnCode PhidgetRFID_setOnTagLostHandler(PhidgetRFIDHandle ch, PhidgetRFID_OnTagLostCallback fptr,
                                                  void *ctx);

PhidgetReturnCode PhidgetDigitalOutput_create(PhidgetDigitalOutputHandle *ch);
PhidgetReturnCode PhidgetDigitalOutput_delete(PhidgetDigitalOutputHandle *ch);
PhidgetReturnCode PhidgetDigitalOutput_setState(PhidgetDigitalOutputHandle ch, int state);
#endif
