-- Applied after the data is loaded. NOT VALID: existing rows are not checked, exactly like a
-- legacy database that gained its constraints late and still holds rows whose parent was
-- hard-deleted.

ALTER TABLE dispatch_profile ADD CONSTRAINT dispatch_profile_user_id_fk FOREIGN KEY (user_id) REFERENCES auth_user (id) NOT VALID;
ALTER TABLE dispatch_profile ADD CONSTRAINT dispatch_profile_office_id_fk FOREIGN KEY (office_id) REFERENCES dispatch_office (id) NOT VALID;
ALTER TABLE dispatch_doctor ADD CONSTRAINT dispatch_doctor_office_id_fk FOREIGN KEY (office_id) REFERENCES dispatch_office (id) NOT VALID;
ALTER TABLE dispatch_doctor ADD CONSTRAINT dispatch_doctor_profile_id_fk FOREIGN KEY (profile_id) REFERENCES dispatch_profile (id) NOT VALID;
ALTER TABLE dispatch_patient ADD CONSTRAINT dispatch_patient_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_patient ADD CONSTRAINT dispatch_patient_office_id_fk FOREIGN KEY (office_id) REFERENCES dispatch_office (id) NOT VALID;
ALTER TABLE dispatch_order ADD CONSTRAINT dispatch_order_patient_id_fk FOREIGN KEY (patient_id) REFERENCES dispatch_patient (id) NOT VALID;
ALTER TABLE dispatch_order ADD CONSTRAINT dispatch_order_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_order ADD CONSTRAINT dispatch_order_office_id_fk FOREIGN KEY (office_id) REFERENCES dispatch_office (id) NOT VALID;
ALTER TABLE dispatch_jaw ADD CONSTRAINT dispatch_jaw_patient_id_fk FOREIGN KEY (patient_id) REFERENCES dispatch_patient (id) NOT VALID;
ALTER TABLE dispatch_jaw ADD CONSTRAINT dispatch_jaw_order_id_fk FOREIGN KEY (order_id) REFERENCES dispatch_order (id) NOT VALID;
ALTER TABLE dispatch_treatment_plan ADD CONSTRAINT dispatch_treatment_plan_patient_id_fk FOREIGN KEY (patient_id) REFERENCES dispatch_patient (id) NOT VALID;
ALTER TABLE dispatch_treatment_plan ADD CONSTRAINT dispatch_treatment_plan_project_id_fk FOREIGN KEY (project_id) REFERENCES dispatch_project (id) NOT VALID;
ALTER TABLE dispatch_patient_event ADD CONSTRAINT dispatch_patient_event_patient_id_fk FOREIGN KEY (patient_id) REFERENCES dispatch_patient (id) NOT VALID;
ALTER TABLE dispatch_case ADD CONSTRAINT dispatch_case_patient_id_fk FOREIGN KEY (patient_id) REFERENCES dispatch_patient (id) NOT VALID;
ALTER TABLE dispatch_case ADD CONSTRAINT dispatch_case_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_case_state ADD CONSTRAINT dispatch_case_state_case_id_fk FOREIGN KEY (case_id) REFERENCES dispatch_case (id) NOT VALID;
ALTER TABLE dispatch_task ADD CONSTRAINT dispatch_task_case_id_fk FOREIGN KEY (case_id) REFERENCES dispatch_case (id) NOT VALID;
ALTER TABLE dispatch_task ADD CONSTRAINT dispatch_task_assignee_id_fk FOREIGN KEY (assignee_id) REFERENCES dispatch_profile (id) NOT VALID;
ALTER TABLE dispatch_task ADD CONSTRAINT dispatch_task_parent_task_id_fk FOREIGN KEY (parent_task_id) REFERENCES dispatch_task (id) NOT VALID;
ALTER TABLE dispatch_case_message ADD CONSTRAINT dispatch_case_message_case_id_fk FOREIGN KEY (case_id) REFERENCES dispatch_case (id) NOT VALID;
ALTER TABLE dispatch_case_message ADD CONSTRAINT dispatch_case_message_sender_id_fk FOREIGN KEY (sender_id) REFERENCES dispatch_profile (id) NOT VALID;
ALTER TABLE dispatch_message_attachment ADD CONSTRAINT dispatch_message_attachment_message_id_fk FOREIGN KEY (message_id) REFERENCES dispatch_case_message (id) NOT VALID;
ALTER TABLE dispatch_case_file ADD CONSTRAINT dispatch_case_file_case_id_fk FOREIGN KEY (case_id) REFERENCES dispatch_case (id) NOT VALID;
ALTER TABLE dispatch_system_message ADD CONSTRAINT dispatch_system_message_recipient_id_fk FOREIGN KEY (recipient_id) REFERENCES dispatch_profile (id) NOT VALID;
ALTER TABLE dispatch_system_message ADD CONSTRAINT dispatch_system_message_sender_id_fk FOREIGN KEY (sender_id) REFERENCES dispatch_profile (id) NOT VALID;
ALTER TABLE dispatch_operation ADD CONSTRAINT dispatch_operation_office_id_fk FOREIGN KEY (office_id) REFERENCES dispatch_office (id) NOT VALID;
ALTER TABLE dispatch_operation ADD CONSTRAINT dispatch_operation_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_purchase ADD CONSTRAINT dispatch_purchase_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_purchase ADD CONSTRAINT dispatch_purchase_order_id_fk FOREIGN KEY (order_id) REFERENCES dispatch_order (id) NOT VALID;
ALTER TABLE dispatch_payment ADD CONSTRAINT dispatch_payment_order_id_fk FOREIGN KEY (order_id) REFERENCES dispatch_order (id) NOT VALID;
ALTER TABLE dispatch_payment ADD CONSTRAINT dispatch_payment_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_offer ADD CONSTRAINT dispatch_offer_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_offer ADD CONSTRAINT dispatch_offer_product_id_fk FOREIGN KEY (product_id) REFERENCES dispatch_product (id) NOT VALID;
ALTER TABLE dispatch_discount ADD CONSTRAINT dispatch_discount_offer_id_fk FOREIGN KEY (offer_id) REFERENCES dispatch_offer (id) NOT VALID;
ALTER TABLE dispatch_discount ADD CONSTRAINT dispatch_discount_doctor_id_fk FOREIGN KEY (doctor_id) REFERENCES dispatch_doctor (id) NOT VALID;
ALTER TABLE dispatch_role_permission ADD CONSTRAINT dispatch_role_permission_role_id_fk FOREIGN KEY (role_id) REFERENCES dispatch_role (id) NOT VALID;
